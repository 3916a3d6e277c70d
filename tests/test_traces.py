"""Mooncake loader: validation errors, session grouping, delays, speed-up, normalisation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dynosim.traces import Session, Trace, TraceError, TraceRow, Turn, iter_rows, load_trace

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_1K = REPO / "examples" / "traces" / "conversation_1k.jsonl"
FULL_CONVERSATION = REPO.parent / "shared" / "traces" / "conversation_trace.jsonl"


def write(tmp_path: Path, *rows, name: str = "t.jsonl") -> Path:
    """Write rows (dicts become JSON, strings go in verbatim) one per line."""
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(ts=0, isl=600, osl=4, ids=(0, 1), **kw) -> dict:
    d = {"timestamp": ts, "input_length": isl, "output_length": osl, "hash_ids": list(ids)}
    d.update(kw)
    return d


def expect_error(path: Path, line: int, field: str | None, fragment: str = "", **kw) -> TraceError:
    with pytest.raises(TraceError) as info:
        load_trace(path, **kw)
    msg = str(info.value)
    assert path.name in msg and f"line {line}" in msg, msg
    if field is not None:
        assert f"'{field}'" in msg and info.value.field == field, msg
    assert fragment in msg, msg
    assert info.value.line == line
    return info.value


# --- single rows ------------------------------------------------------------------------------


def test_basic_row_fields(tmp_path):
    p = write(tmp_path, row(ts=5, isl=600, osl=7, ids=(0, 1), session_id="s", priority=2))
    (r,) = iter_rows(p)
    assert r == TraceRow(1, 5.0, 600, 7, (0, 1), "s", None, 2, {})


def test_aliases_and_defaults(tmp_path):
    p = write(tmp_path, {"created_time": 3, "input_tokens": 100, "output_tokens": 9, "hash_ids": [4, 5],
                         "delay_ms": 0},
              {"timestamp": 4, "output_length": 1, "hash_ids": [4, 5, 6]})
    a, b = iter_rows(p)
    assert (a.timestamp_ms, a.input_length, a.output_length, a.delay_ms) == (3.0, 100, 9, 0.0)
    assert b.input_length == 3 * 512  # default: every trace block full
    assert list(iter_rows(p, trace_block_size=64))[1].input_length == 3 * 64


def test_unknown_keys_kept_in_extra(tmp_path):
    p = write(tmp_path, row(prefix_id="p1", nvext={"agent_hints": {"osl": 10}}))
    (r,) = iter_rows(p)
    assert r.extra == {"prefix_id": "p1", "nvext": {"agent_hints": {"osl": 10}}}
    hash(r)  # the dict field does not make rows unhashable


def test_integer_session_id_becomes_string(tmp_path):
    p = write(tmp_path, row(session_id=7), row(ts=10, session_id=7))
    t = load_trace(p)
    assert [s.session_id for s in t.sessions] == ["7"] and len(t.sessions[0].turns) == 2


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    p = write(tmp_path, row(ts=0), "", "   ", row(ts=1), "")
    assert [r.line for r in iter_rows(p)] == [1, 4]
    p = write(tmp_path, row(ts=0), "", row(ts=1, osl=0))
    expect_error(p, 3, "output_length")


def test_input_length_clamp_option(tmp_path):
    p = write(tmp_path, row(isl=1100, ids=(0, 1)))
    expect_error(p, 1, "input_length", "hash_ids too short for input_length")
    (r,) = iter_rows(p, clamp_input_length=True)
    assert r.input_length == 1024


# --- error paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, line, field, fragment", [
    ('{"timestamp": 0, "output_length": 1, "hash_ids": [0]', 1, None, "invalid JSON"),
    ("[1, 2, 3]", 1, None, "expected a JSON object"),
    ('"just a string"', 1, None, "expected a JSON object"),
])
def test_malformed_lines(tmp_path, text, line, field, fragment):
    expect_error(write(tmp_path, text), line, field, fragment)


@pytest.mark.parametrize("bad, field, fragment", [
    ({"hash_ids": None}, "hash_ids", "missing"),
    ({"output_length": None}, "output_length", "missing"),
    ({"hash_ids": "0,1"}, "hash_ids", "list of integers"),
    ({"hash_ids": [0, -1]}, "hash_ids", "element 1"),
    ({"hash_ids": [0, 1.5]}, "hash_ids", "element 1"),
    ({"hash_ids": [0, True]}, "hash_ids", "element 1"),
    ({"hash_ids": [0, 2**64]}, "hash_ids", "element 1"),
    ({"output_length": 0}, "output_length", ">= 1"),
    ({"output_length": 2.0}, "output_length", "integer"),
    ({"output_length": "3"}, "output_length", "integer"),
    ({"input_length": -5}, "input_length", ">= 0"),
    ({"input_length": 600.5}, "input_length", "integer"),
    ({"input_length": 0}, "input_length", "positive"),
    ({"input_length": None, "hash_ids": []}, "input_length", "positive"),
    ({"input_length": 1025}, "input_length", "hash_ids too short for input_length"),
    ({"timestamp": -1}, "timestamp", ">= 0"),
    ({"timestamp": "0"}, "timestamp", "number"),
    ({"timestamp": float("nan")}, "timestamp", "finite"),
    ({"delay": -1}, "delay", ">= 0"),
    ({"priority": 1.5}, "priority", "integer"),
    ({"session_id": [1]}, "session_id", "string or an integer"),
    ({"created_time": 0}, "timestamp", "given twice"),
    ({"output_tokens": 3}, "output_length", "given twice"),
    ({"delay": 5}, "delay", "first turn cannot have a delay"),
])
def test_field_errors_name_file_line_and_field(tmp_path, bad, field, fragment):
    r = row()
    for k, v in bad.items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    p = write(tmp_path, row(ts=0, ids=(9,), isl=10), r)  # the bad row is on line 2
    expect_error(p, 2, field, fragment)


def test_unsorted_first_turns(tmp_path):
    p = write(tmp_path, row(ts=10), row(ts=20, session_id="a"), row(ts=15))
    err = expect_error(p, 3, "timestamp", "non-decreasing")
    assert "line 2" in str(err)  # points at the row it is out of order with


def test_later_turns_may_go_back_in_time_relative_to_other_sessions(tmp_path):
    # Only first turns must be sorted; a later turn's timestamp is measured within its session.
    p = write(tmp_path, row(ts=0, session_id="a"), row(ts=100), row(ts=50, session_id="a"))
    assert load_trace(p).n_requests == 3


def test_negative_turn_delta_is_an_error(tmp_path):
    p = write(tmp_path, row(ts=50, session_id="a"), row(ts=60), row(ts=40, session_id="a"))
    expect_error(p, 3, "timestamp", "earlier than the previous turn")


def test_delta_needs_an_earlier_timestamp(tmp_path):
    p = write(tmp_path, row(ts=0), {"session_id": "a", "output_length": 1, "hash_ids": [0]},
              row(ts=40, session_id="a"))
    expect_error(p, 3, "timestamp", "no earlier turn", require_timestamps=False)


def test_first_turn_timestamp_required_unless_closed_loop(tmp_path):
    p = write(tmp_path, {"output_length": 1, "hash_ids": [0]}, row(ts=10))
    expect_error(p, 1, "timestamp", "missing on a first turn")
    t = load_trace(p, require_timestamps=False)
    assert t.first_arrivals() == [0.0, 0.0]  # the timeless session starts at 0; the other at 10-10


def test_empty_file(tmp_path):
    p = write(tmp_path, "", "  ")
    with pytest.raises(TraceError, match="no requests"):
        load_trace(p)


def test_bad_arguments(tmp_path):
    p = write(tmp_path, row())
    for speedup in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="speedup"):
            load_trace(p, speedup=speedup)
    with pytest.raises(ValueError, match="trace_block_size"):
        load_trace(p, trace_block_size=0)
    with pytest.raises(ValueError, match="limit"):
        load_trace(p, limit=0)


# --- grouping and timing ----------------------------------------------------------------------


def test_sessions_delays_and_normalisation(tmp_path):
    # Mirrors a probe replayed through Dynamo 1.6.1 (dynamo.replay, 1 worker): session a's turns
    # arrived at 0, completion+4000 and completion+100; session b at 1000.
    p = write(tmp_path,
              row(ts=1000, session_id="a"),
              row(ts=5000, session_id="a"),
              row(ts=2000, session_id="b"),
              row(ts=2500, session_id="a", delay=100),
              row(ts=2000),
              row(session_id="a", ts=None))  # no timestamp, no delay: right after completion
    t = load_trace(p)
    assert isinstance(t, Trace) and t.n_requests == 6 and t.n_sessions == 3
    assert [(s.session_id, s.start_ms) for s in t.sessions] == [("a", 0.0), ("b", 1000.0), ("request_5", 1000.0)]
    a = t.sessions[0]
    assert [tn.delay_ms for tn in a.turns] == [0.0, 4000.0, 100.0, 0.0]
    assert [tn.row.line for tn in a.turns] == [1, 2, 4, 6]
    assert a.turns[1] == Turn(a.turns[1].row, 4000.0)
    assert not t.is_single_turn
    assert [r.line for r in t.rows()] == [1, 2, 3, 4, 5, 6]


def test_delta_measured_from_latest_timestamped_turn(tmp_path):
    p = write(tmp_path, row(ts=0, session_id="a"), row(ts=None, session_id="a", delay=7),
              row(ts=30, session_id="a"), row(ts=None, session_id="a"), row(ts=45, session_id="a"))
    assert [tn.delay_ms for tn in load_trace(p).sessions[0].turns] == [0.0, 7.0, 30.0, 0.0, 15.0]


def test_speedup_divides_starts_and_delays(tmp_path):
    p = write(tmp_path, row(ts=1000, session_id="a"), row(ts=5000, session_id="a"), row(ts=3000),
              row(ts=6000, session_id="a", delay=100))
    t = load_trace(p, speedup=2.0)
    assert t.speedup == 2.0
    assert t.first_arrivals() == [0.0, 1000.0]
    assert [tn.delay_ms for tn in t.sessions[0].turns] == [0.0, 2000.0, 50.0]
    assert t.sessions[0].turns[1].row.timestamp_ms == 5000.0  # rows stay as written


def test_equal_starts_keep_file_order(tmp_path):
    p = write(tmp_path, row(ts=7, session_id="z"), row(ts=7, session_id="y"), row(ts=7))
    assert [s.session_id for s in load_trace(p).sessions] == ["z", "y", "request_3"]


def test_limit_counts_requests(tmp_path):
    p = write(tmp_path, row(ts=0, session_id="a"), row(ts=1, session_id="a"), row(ts=2), "not json")
    t = load_trace(p, limit=2)
    assert t.n_requests == 2 and t.n_sessions == 1
    with pytest.raises(TraceError):
        load_trace(p, limit=4)


def test_sessionless_rows_are_one_turn_sessions(tmp_path):
    p = write(tmp_path, row(ts=100), row(ts=100), row(ts=250))
    t = load_trace(p)
    assert t.is_single_turn and t.first_arrivals() == [0.0, 0.0, 150.0]
    assert all(isinstance(s, Session) and s.turns[0].delay_ms == 0.0 for s in t.sessions)


def test_example_trace_loads(tmp_path):
    t = load_trace(EXAMPLE_1K)
    assert t.n_requests == t.n_sessions == 1000 and t.is_single_turn
    assert t.first_arrivals()[0] == 0.0 and t.first_arrivals()[-1] == 330_000.0


@pytest.mark.skipif(not FULL_CONVERSATION.exists(), reason=f"shared trace not present at {FULL_CONVERSATION}")
def test_full_conversation_trace_loads():
    # (its speed is benchmarks/replay_speed.py's to report: a timed assertion fails on a busy machine)
    t = load_trace(FULL_CONVERSATION)
    assert t.n_requests == 12_031 and t.n_sessions == 12_031
    assert t.first_arrivals()[-1] == 3_536_999.0


def test_ids_wider_than_32_bits_never_alias(tmp_path):
    """Two prefixes whose ids share their low 32 bits (Dynamo's ``as u32`` would merge them) stay distinct:
    the ids are renumbered densely, equal ids stay equal, and the trace says so."""
    from dynosim.api import run

    wide = 2**32
    p = write(tmp_path, row(0, ids=(5, 6)), row(1000, ids=(wide + 5, wide + 6)), row(2000, ids=(5, 7)))
    tr = load_trace(p)
    ids = [r.hash_ids for s in tr.sessions for r in (t.row for t in s.turns)]
    assert ids == [(0, 1), (2, 3), (0, 4)]
    assert len(tr.notes) == 1 and "line 2" in tr.notes[0] and "renumbered" in tr.notes[0]
    # simulated reuse: only the shared first block of rows 1 and 3 (not the aliased row 2)
    res = run(p, workers=1, engine={"block_size": 512})
    assert res.requests["reused_tokens"].tolist() == [0, 0, 512]
    assert res.summary["run"]["trace_notes"] == list(tr.notes)
    assert load_trace(write(tmp_path, row(0, ids=(1, 2)), name="narrow.jsonl")).notes == ()


def test_compressed_traces_load_like_the_plain_file(tmp_path):
    """gzip and zstd traces (told by magic bytes, whatever the name) give the same rows."""
    import gzip

    import zstandard

    raw = EXAMPLE_1K.read_bytes()[:200_000]
    raw = raw[: raw.rindex(b"\n") + 1]
    plain = tmp_path / "t.jsonl"
    plain.write_bytes(raw)
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress(raw))
    zst = tmp_path / "t.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw))
    want = load_trace(plain).rows()
    assert len(want) > 10
    assert load_trace(gz).rows() == want and load_trace(zst).rows() == want
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(raw)[:300])                    # a cut-off download
    with pytest.raises(TraceError, match="bad.gz.*cannot decompress|bad.gz.*line"):
        load_trace(bad)


def test_a_directory_or_a_file_without_newlines_is_a_clear_error(tmp_path, monkeypatch):
    import dynosim.traces.mooncake as mooncake

    with pytest.raises(TraceError, match="is a directory"):
        load_trace(tmp_path)
    monkeypatch.setattr(mooncake, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "blob.jsonl"
    p.write_bytes(b"x" * 5000)
    with pytest.raises(TraceError, match=r"blob.jsonl, line 1: longer than .* without a newline"):
        load_trace(p)


def test_inspect_and_convert_refuse_empty_results(tmp_path):
    from dynosim.traces.convert import shrink
    from dynosim.traces.inspect import inspect_trace

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TraceError, match="empty.jsonl: no requests"):
        inspect_trace(empty)
    p = write(tmp_path, row(0), row(1))
    with pytest.raises(ValueError, match="no rows to write: the file has 2 row.s. and --skip is 5"):
        shrink(p, skip=5)
    with pytest.raises(ValueError, match="longer than 10 tokens"):
        shrink(p, max_total_tokens=10)
