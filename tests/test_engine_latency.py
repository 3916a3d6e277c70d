"""A real server's latencies outside the engine's passes: serial admission and client-visible latency."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dynosim.config import RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.sim.simulation import simulate, summarize_state
from dynosim.traces.mooncake import load_trace


def _trace(tmp_path, rows):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_trace(p, trace_block_size=64)


def _cfg(**engine):
    return RunConfig(workers=1, trace_block_size=64,
                     engine=MockerArgs(block_size=32, timing="fixed",
                                       timing_params={"prefill_ms": 10, "decode_ms": 5}, **engine))


ROWS = [{"timestamp": 0, "input_length": 64, "output_length": 4, "hash_ids": [i]} for i in range(3)]


def test_simultaneous_arrivals_batch_together_without_an_admission_interval(tmp_path):
    st = simulate(_trace(tmp_path, ROWS), _cfg())
    ttft = [r.first_token - r.arrival for r in st.requests]
    assert ttft[0] == ttft[1] == ttft[2]


def test_admission_interval_makes_the_staircase(tmp_path):
    st = simulate(_trace(tmp_path, ROWS), _cfg(admit_interval_ms=1.0))
    ttft = sorted(r.first_token - r.arrival for r in st.requests)
    # the first finds the engine idle and is prefilled alone; the other two join the next pass
    assert ttft[0] == pytest.approx(10.0) and ttft[1] == ttft[2] > ttft[0] + 9.0
    assert all(r.status == "done" and r.generated == 4 for r in st.requests)


def test_client_latency_shifts_token_times_not_gaps(tmp_path):
    rows = ROWS + [{"timestamp": 0, "input_length": 128, "output_length": 3, "hash_ids": [9, 10],
                    "session_id": "s"},
                   {"delay": 20, "input_length": 192, "output_length": 5, "hash_ids": [9, 10, 11],
                    "session_id": "s"}]
    base = simulate(_trace(tmp_path, rows), _cfg())
    late = simulate(_trace(tmp_path, rows), _cfg(client_latency_ms=7.0))
    b = {r.line: r for r in base.requests}
    for r in late.requests:
        if r.turn == 0:
            assert r.first_token - r.arrival == pytest.approx(b[r.line].first_token - b[r.line].arrival + 7.0)
            assert r.last_token - r.first_token == pytest.approx(b[r.line].last_token - b[r.line].first_token)
        else:  # the next turn starts when the client saw the previous one finish, 7 ms later
            assert r.arrival == pytest.approx(b[r.line].arrival + 7.0)
    _, s0 = summarize_state(base)
    _, s1 = summarize_state(late)
    assert s1["itl_ms"]["mean"] == pytest.approx(s0["itl_ms"]["mean"])
    assert s1["token_gap_ms"]["mean"] == pytest.approx(s0["token_gap_ms"]["mean"])


@pytest.mark.parametrize("engine", [{"client_latency_ms": 3.5}, {"admit_interval_ms": 2.0},
                                    {"client_latency_ms": 3.5, "admit_interval_ms": 2.0}])
def test_fast_forward_gives_identical_results_with_latencies(tmp_path, engine):
    rows = [{"timestamp": 5 * i, "input_length": 64 + 32 * (i % 3), "output_length": 20 + i,
             "hash_ids": [i % 2, 100 + i, 200 + i]} for i in range(12)]
    tr = _trace(tmp_path, rows)
    cfg = _cfg(**engine)
    a = simulate(tr, cfg)
    b = simulate(tr, cfg.model_copy(update={"fast_forward": False}))
    key = lambda st: sorted((r.line, r.first_token, r.last_token, r.generated) for r in st.requests)
    assert key(a) == key(b)
    ga, gb = a.gaps.arrays(), b.gaps.arrays()
    assert np.repeat(*ga).sum() == pytest.approx(np.repeat(*gb).sum())


def test_pass_overhead_is_charged_once_in_a_mixed_pass(tmp_path):
    """A pass that prefills and decodes pays the fixed per-pass cost once (measured profiles say how much)."""
    prof = tmp_path / "p.yaml"
    prof.write_text("prefill: {new_tokens: [32, 1032], ms: [10, 110]}\n"
                    "decode: {active_kv_tokens: [0, 100000], context_length: [100], itl_ms: [[6], [6]],"
                    " pass_overhead_ms: 4}\n")
    rows = [{"timestamp": 0, "input_length": 64, "output_length": 30, "hash_ids": [1]},
            {"timestamp": 50, "input_length": 64, "output_length": 2, "hash_ids": [2]}]

    def first_gap_after(overhead_file):
        eng = MockerArgs(block_size=32, timing="interpolated", timing_profile=str(overhead_file))
        st = simulate(_trace(tmp_path, rows), RunConfig(workers=1, trace_block_size=64, engine=eng,
                                                        fast_forward=False))
        a, b = sorted(st.requests, key=lambda r: r.line)
        return b.first_token - b.arrival, a, b

    ttft, a, b = first_gap_after(prof)
    plain = tmp_path / "q.yaml"
    plain.write_text(prof.read_text().replace(", pass_overhead_ms: 4", ""))
    ttft0, a0, _ = first_gap_after(plain)
    # request b arrives while a decodes: b's prefill (10 + 32 x 0.1 = 13.2 ms) shares a pass with a's decode
    # step (6 ms): 19.2 ms without the overhead rule, 15.2 ms with it; a's whole decode is 4 ms shorter
    assert a.last_token - a.first_token == pytest.approx(a0.last_token - a0.first_token - 4.0)
    assert a0.last_token - a0.first_token == pytest.approx(29 * 6.0 + 13.2)
    pure = simulate(_trace(tmp_path, rows[:1]), RunConfig(workers=1, trace_block_size=64, engine=MockerArgs(
        block_size=32, timing="interpolated", timing_profile=str(prof))))
    assert pure.requests[0].last_token - pure.requests[0].first_token == pytest.approx(29 * 6.0)  # no mixed pass


def test_run_cli_applies_a_profiles_calibrated_latencies(tmp_path):
    from typer.testing import CliRunner

    from dynosim.cli import app

    prof = tmp_path / "p.yaml"
    prof.write_text("engine: {client_latency_ms: 7.0}\n"
                    "prefill: {new_tokens: [32, 1032], ms: [10, 110]}\n"
                    "decode: {active_kv_tokens: [0, 100000], context_length: [100], itl_ms: [[6], [6]]}\n")
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"timestamp": 0, "input_length": 64, "output_length": 3, "hash_ids": [1]}) + "\n")
    args = ["run", "--trace", str(trace), "--trace-block-size", "64", "--block-size", "32", "--timing",
            "interpolated", "--json", "--timing-profile"]
    r = CliRunner().invoke(app, args + [str(prof)])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["run"]["config"]["engine"]["client_latency_ms"] == 7.0
    assert s["ttft_ms"]["mean"] == pytest.approx(10 + 32 * 0.1 + 7.0)   # the lone prefill pass + the latency
    bad = tmp_path / "bad.yaml"
    bad.write_text(prof.read_text().replace("7.0", "-1"))
    r = CliRunner().invoke(app, args + [str(bad)])
    assert r.exit_code == 2 and "client_latency_ms" in r.output
