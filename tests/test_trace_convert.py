"""trace convert: a window of rows with token lengths divided, structure kept, nothing dropped silently."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dynosim.cli import app
from dynosim.sim.simulation import simulate
from dynosim.config import RunConfig
from dynosim.traces.convert import shrink
from dynosim.traces.mooncake import load_trace


def _write(tmp_path, rows):
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


ROWS = [
    {"timestamp": 0, "input_length": 1000, "output_length": 100, "hash_ids": [1, 2]},
    {"timestamp": 10, "input_length": 1030, "output_length": 17, "hash_ids": [1, 2, 3]},
    {"timestamp": 20, "input_length": 9000, "output_length": 50, "hash_ids": list(range(10, 28))},
    {"timestamp": 30, "input_length": 512, "output_length": 1, "hash_ids": [1], "session_id": "s", "priority": 2},
]


def test_shrink_divides_lengths_and_keeps_prefix_structure(tmp_path):
    res = shrink(_write(tmp_path, ROWS), token_scale=16, max_total_tokens=400)
    assert res.trace_block_size == 32 and res.scanned == 4 and res.dropped_too_long == 1
    a, b, d = res.rows
    assert (a["input_length"], a["output_length"]) == (63, 7)       # ceil(1000/16), ceil(100/16)
    assert (b["input_length"], b["output_length"]) == (65, 2)
    assert a["hash_ids"] == [1, 2] and b["hash_ids"] == [1, 2, 3]    # 65 tokens need 3 ids of 32
    assert d == {"timestamp": 30, "input_length": 32, "output_length": 1, "hash_ids": [1], "session_id": "s",
                 "priority": 2}
    # the shrunk trace loads at the new block size and shares exactly the prefix blocks the original shares
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in res.rows))
    tr = load_trace(out, trace_block_size=32)
    assert tr.n_requests == 3
    st = simulate(tr, RunConfig(workers=1, trace_block_size=32, engine={"block_size": 16}))
    reused = sorted((r.line, r.reused) for r in st.requests)
    assert reused[1][1] == 62 // 16 * 16  # the second request reuses the first one's full blocks (capped at isl-1)


def test_shrink_window_and_errors(tmp_path):
    p = _write(tmp_path, ROWS)
    res = shrink(p, skip=1, limit=2)
    assert [r["timestamp"] for r in res.rows] == [10, 20] and res.trace_block_size == 512
    with pytest.raises(ValueError, match="must divide"):
        shrink(p, token_scale=3)
    with pytest.raises(ValueError, match="positive integer"):
        shrink(p, token_scale=0)


def test_trace_convert_cli(tmp_path):
    p = _write(tmp_path, ROWS)
    out = tmp_path / "small.jsonl"
    r = CliRunner().invoke(app, ["trace", "convert", str(p), str(out), "--token-scale", "16",
                                 "--max-total-tokens", "400"])
    assert r.exit_code == 0, r.output
    assert "1 of 4 rows left out" in r.output.replace("\n", " ")
    assert len(out.read_text().splitlines()) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 10}\n')
    r = CliRunner().invoke(app, ["trace", "convert", str(bad), str(out)])
    assert r.exit_code == 2 and "line 1" in r.output and "hash_ids" in r.output
