"""Multi-turn sessions end to end, pinned to figures Dynamo 1.6.1's replay produced.

The expected values below were produced by running the same trace through
``dynamo.replay.run_trace_replay`` (ai-dynamo 1.6.1, 2 workers, round robin,
block 64, 16384 blocks, trace block 512, capture_per_request=True).
"""

from __future__ import annotations

import pytest

import dynosim

TRACE = """\
{"session_id": "a", "timestamp": 0, "input_length": 1000, "output_length": 20, "hash_ids": [1, 2]}
{"session_id": "b", "timestamp": 10, "input_length": 700, "output_length": 5, "hash_ids": [7, 8]}
{"session_id": "a", "delay": 500, "input_length": 1600, "output_length": 10, "hash_ids": [1, 2, 3, 4]}
{"session_id": "b", "timestamp": 2000, "input_length": 900, "output_length": 7, "hash_ids": [7, 8]}
{"session_id": "a", "delay": 100, "input_length": 2100, "output_length": 3, "hash_ids": [1, 2, 3, 4, 5]}
"""

# session, turn, arrival, ttft, e2e, reused, worker  (from Dynamo 1.6.1)
DYNAMO = [
    ("a", 0, 0.0, 32.105859, 142.153842, 0, 0),
    ("b", 0, 10.0, 27.336117, 50.440809, 0, 1),
    ("a", 1, 642.153842, 26.391263, 78.794753, 960, 0),
    ("a", 2, 820.948595, 50.243249, 61.939530, 0, 1),
    ("b", 1, 2050.440809, 30.507525, 65.226636, 0, 0),
]


def test_later_turns_start_after_previous_completion_plus_delay(tmp_path):
    p = tmp_path / "sessions.jsonl"
    p.write_text(TRACE)
    df = dynosim.run(p, workers=2).requests.sort_values("arrival_ms").reset_index(drop=True)
    assert len(df) == len(DYNAMO)
    for row, (sess, turn, arrival, ttft, e2e, reused, worker) in zip(df.itertuples(), DYNAMO):
        assert (row.session_id, row.turn, row.worker, row.reused_tokens) == (sess, turn, worker, reused)
        assert row.arrival_ms == pytest.approx(arrival, abs=1e-5)
        assert row.ttft_ms == pytest.approx(ttft, abs=1e-5)
        assert row.e2e_ms == pytest.approx(e2e, abs=1e-5)
    # the causal chain itself: turn k+1 arrives at turn k's last token + its delay
    a = df[df.session_id == "a"].sort_values("turn")
    assert a.arrival_ms.iloc[1] == pytest.approx(a.last_token_ms.iloc[0] + 500)
    assert a.arrival_ms.iloc[2] == pytest.approx(a.last_token_ms.iloc[1] + 100)


def test_arrival_speedup_divides_start_times_and_delays(tmp_path):
    p = tmp_path / "sessions.jsonl"
    p.write_text(TRACE)
    df = dynosim.run(p, workers=2, arrival_speedup=2.0).requests
    b = df[df.session_id == "b"].sort_values("turn")
    assert b.arrival_ms.iloc[0] == pytest.approx(5.0)
    assert b.arrival_ms.iloc[1] == pytest.approx(b.last_token_ms.iloc[0] + 1990 / 2.0)


def test_closed_loop_concurrency_keeps_n_sessions_open(tmp_path):
    """Closed loop with 2 users: timestamps are ignored, two requests start at 0 and each later one starts
    when one finishes; one worker with fixed 10 ms prefill and 5 ms decode steps."""
    import json as _json

    from dynosim.config import RunConfig
    from dynosim.engines.mocker.config import MockerArgs
    from dynosim.sim.simulation import simulate
    from dynosim.traces.mooncake import load_trace

    p = tmp_path / "t.jsonl"
    p.write_text("".join(_json.dumps({"timestamp": 1_000_000 * i, "input_length": 100, "output_length": 3,
                                      "hash_ids": [i]}) + "\n" for i in range(6)))
    eng = MockerArgs(timing="fixed", timing_params={"prefill_ms": 10, "decode_ms": 5})
    st = simulate(load_trace(p), RunConfig(workers=1, engine=eng, concurrency=2))
    reqs = sorted(st.requests, key=lambda r: r.arrival)
    assert [r.arrival for r in reqs[:2]] == [0.0, 0.0]
    ends = sorted(r.last_token for r in reqs)
    for r in reqs[2:]:                                     # each later request starts as an earlier one ends
        assert r.arrival in ends
    for t in sorted({r.arrival for r in reqs} | set(ends)):
        assert sum(r.arrival <= t < r.last_token for r in reqs) <= 2
    assert all(r.status == "done" for r in reqs) and max(ends) < 1000      # far sooner than the timestamps


def test_closed_loop_survives_sessions_ending_together_after_the_last_one_opened(tmp_path):
    """Every request fails up front (4 KV blocks): sessions end at once, more than are left to open."""
    import json as _json

    from typer.testing import CliRunner

    from dynosim.cli import app

    p = tmp_path / "t.jsonl"
    p.write_text("".join(_json.dumps({"timestamp": i, "input_length": 2000, "output_length": 5,
                                      "hash_ids": [i, 100 + i, 200 + i, 300 + i]}) + "\n" for i in range(6)))
    out = CliRunner().invoke(app, ["run", "--trace", str(p), "--concurrency", "8", "--num-gpu-blocks", "4",
                                   "--json"])
    assert out.exit_code == 5, out.output                   # every request failed: said, and exit 5
    s = _json.loads(out.stdout[out.stdout.index("{"):])
    assert s["requests"]["failed"] == 6 and s["requests"]["total"] == 6
