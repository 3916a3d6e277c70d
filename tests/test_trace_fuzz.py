"""Property: whatever bytes a trace line holds, loading either succeeds or raises a TraceError that names the
file and the line; never another exception (a traceback for the user)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings, strategies as st

from dynosim.traces import TraceError, load_trace

GOOD = {"timestamp": 0, "input_length": 600, "output_length": 4, "hash_ids": [0, 1]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
fields = st.sampled_from(["timestamp", "created_time", "input_length", "input_tokens", "output_length",
                          "output_tokens", "hash_ids", "session_id", "delay", "delay_ms", "priority"])
mutated_rows = st.builds(lambda base, changes, drops: json.dumps(
    {**{k: v for k, v in base.items() if k not in drops}, **changes}),
    st.just(GOOD), st.dictionaries(fields, json_values, max_size=3), st.sets(fields, max_size=2))
raw_lines = st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.one_of(mutated_rows.map(str.encode), raw_lines), position=st.integers(0, 2))
def test_any_line_loads_or_names_file_and_line(tmp_path, line, position):
    rows = [json.dumps({**GOOD, "timestamp": t}).encode() for t in (0, 10)]
    rows.insert(position, line)
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    try:
        load_trace(path)
    except TraceError as exc:
        msg = str(exc)
        assert "fuzz.jsonl" in msg, msg
        if not line.strip():        # a blank line is skipped, so any error is about another line
            return
        assert exc.line is not None, msg
        assert f"line {exc.line}" in msg
