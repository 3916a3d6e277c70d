"""The planner in the simulator's loop: a traffic step, startup delay, draining, pools, invariants, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynosim.config import DisaggConfig, RunConfig
from dynosim.disagg.transfer import TransferConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.planner import PlannerConfig
from dynosim.sim.simulation import simulate, summarize_state
from dynosim.traces.mooncake import load_trace

from conftest import load_rows, router_modes, scenarios

SEG_S = 600.0


def step_rows(base_rps: float, factor: float, seg_s: float = SEG_S, isl: int = 8192, osl: int = 128, seed: int = 0):
    """Poisson arrivals: ``base_rps`` for a segment, ``factor``× for the next, ``base_rps`` again; no shared prefixes."""
    rng = np.random.default_rng(seed)
    t, rows, nid = 0.0, [], 0
    nb = -(-isl // 512)
    while True:
        rate = base_rps * (factor if seg_s <= t < 2 * seg_s else 1.0)
        t += rng.exponential(1.0 / rate)
        if t >= 3 * seg_s:
            return rows
        rows.append({"timestamp": int(t * 1000), "input_length": isl, "output_length": osl,
                     "hash_ids": list(range(nid, nid + nb))})
        nid += nb


def _levels(tl: pd.DataFrame, *cols: str) -> list[int]:
    """Sum over pools of ``cols`` after each timeline row (each row is one pool's new state)."""
    held: dict[str, int] = {}
    out = []
    for row in tl.itertuples(index=False):
        held[row.pool] = sum(getattr(row, c) for c in cols)
        out.append(sum(held.values()))
    return out


@pytest.fixture(scope="module")
def step_run(tmp_path_factory):
    """Rate ×4 for ten minutes (1.5 → 6 requests/s of 8k-token prompts; one worker sustains ~3/s)."""
    path = tmp_path_factory.mktemp("step") / "step.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in step_rows(1.5, 4.0)))
    cfg = RunConfig(workers=1, router_mode="kv",
                    planner=PlannerConfig(predictor="kalman", startup_time_s=60.0, max_gpu_budget=8))
    st_ = simulate(load_trace(path), cfg)
    df, summary = summarize_state(st_)
    return cfg, st_, df, summary, st_.extra["planner"].timeline()


def test_traffic_step_scales_up_after_the_startup_delay_and_back_down(step_run):
    cfg, st_, df, summary, tl = step_run
    assert summary["requests"]["completed"] == summary["requests"]["total"] == len(df)
    before = tl[tl["time_s"] < SEG_S]
    assert (before["ready"] == 1).all() and (before["starting"] == 0).all()      # base load: one worker
    ups = tl[(tl["starting"] > 0) & (tl["reason"] != "ready")]
    first_up = float(ups["time_s"].min())
    assert SEG_S <= first_up < SEG_S + 120                                         # reacts within two minutes
    # nothing becomes routable before its startup delay: the first extra worker is ready at decision + 60 s
    first_ready = tl[(tl["reason"] == "ready")]["time_s"].min()
    assert first_ready == pytest.approx(first_up + 60.0)
    during = tl[(tl["time_s"] >= SEG_S) & (tl["time_s"] < 2 * SEG_S)]
    assert during["ready"].max() >= 3                                              # ×4 load needs ≥ 3 workers
    # after the step it scales back down to one worker
    after = tl[tl["time_s"] >= 2 * SEG_S]
    assert (after["ready"].diff().fillna(0) <= 0).all() and int(tl["ready"].iloc[-1]) == 1
    # GPU-seconds: less than the static peak deployment for the whole run, more than one worker
    span = summary["duration_s"]
    peak = summary["planner"]["peak_gpus"]
    assert span < summary["gpu_seconds"] < peak * span
    assert summary["mean_gpus"] == pytest.approx(summary["gpu_seconds"] / span)
    assert summary["throughput"]["output_tokens_per_s_per_gpu"] == pytest.approx(
        summary["output_tokens"] / summary["gpu_seconds"])
    # the requests of the step do not pile up: most meet both objectives
    assert summary["goodput"]["attainment"] > 0.7


def test_timeline_accounts_for_every_worker(step_run):
    _, st_, _, summary, tl = step_run
    assert list(tl.columns) == ["time_s", "pool", "target", "starting", "ready", "draining", "gpus", "reason"]
    assert (tl["ready"] >= 1).all() and tl["time_s"].is_monotonic_increasing
    assert (tl["gpus"] == tl["starting"] + tl["ready"] + tl["draining"]).all()
    assert (tl["starting"] + tl["ready"] <= 8).all()                               # the GPU budget
    # every worker that ever ran is in the state, and all are empty at the end with KV conserved
    assert len(st_.workers) >= summary["planner"]["peak_gpus"]
    for w in st_.workers:
        assert w.sched is not None and not w.sched.has_work
        w.sched.kv.check()


def test_gpu_seconds_integrates_the_timeline_by_hand():
    from dynosim.sim.scaling import PlannerDriver

    d = PlannerDriver.__new__(PlannerDriver)
    d.rows = [(0.0, "p", 1, 0, 1, 0, 1, "start"), (0.0, "d", 2, 0, 2, 0, 2, "start"),
              (10.0, "p", 2, 1, 1, 0, 2, "load"), (20.0, "d", 1, 0, 1, 1, 2, "load"),
              (25.0, "d", 1, 0, 1, 0, 1, "drained")]
    # 3 GPUs for 10 s, 4 for 15 s, 3 for the last 5 s of [0, 30]
    assert d.gpu_seconds(0.0, 30_000.0) == pytest.approx(30 + 60 + 15)
    assert d.gpu_seconds(5_000.0, 12_000.0) == pytest.approx(3 * 5 + 4 * 2)
    assert d._peak_gpus() == 4


def test_scale_down_drains_a_busy_worker(tmp_path):
    """Two workers busy with long outputs; the latency target's load step removes one at once from the
    router, but it finishes its requests before its GPUs are released."""
    rows = [{"timestamp": 0, "input_length": 512, "output_length": 2000, "hash_ids": [i]} for i in range(4)]
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RunConfig(workers=2, router_mode="round-robin", engine=MockerArgs(timing="fixed",
                    timing_params={"prefill_ms": 10, "decode_ms": 5}),
                    planner=PlannerConfig(optimization_target="latency", load_interval_s=1.0,
                                          load_min_observations=1, startup_time_s=0))
    st_ = simulate(load_trace(p, trace_block_size=512), cfg)
    tl = st_.extra["planner"].timeline()
    down = tl[tl["reason"] == "load"].iloc[0]
    assert down["time_s"] == 1.0 and down["ready"] == 1 and down["draining"] == 1
    drained = tl[tl["reason"] == "drained"].iloc[0]
    # its two requests (2000 tokens × 5 ms ≈ 10 s) finish before it lets go of its GPU
    assert drained["time_s"] == pytest.approx(10.015, abs=0.02) and drained["gpus"] == 1
    assert all(r.status == "done" and r.generated == 2000 for r in st_.requests)
    assert sorted({r.worker for r in st_.requests}) == [0, 1]


def test_disaggregated_pools_scale_separately_and_deterministically(tmp_path):
    path = tmp_path / "step.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in step_rows(2.0, 4.0, seg_s=200.0, isl=8192, osl=64)))
    cfg = RunConfig(router_mode="kv", disagg=DisaggConfig(prefill_workers=1, decode_workers=1,
                                                          transfer=TransferConfig(link="rdma")),
                    planner=PlannerConfig(predictor="constant", startup_time_s=20.0, throughput_interval_s=60.0,
                                          max_gpu_budget=8))
    st_ = simulate(load_trace(path), cfg)
    df, s = summarize_state(st_)
    tl = st_.extra["planner"].timeline()
    assert s["requests"]["completed"] == len(df)
    pre, dec = tl[tl["pool"] == "prefill"], tl[tl["pool"] == "decode"]
    assert pre["ready"].max() >= 2                   # prompts are the bottleneck: the prefill pool grows
    assert dec["ready"].max() <= pre["ready"].max()
    assert max(_levels(tl, "starting", "ready")) <= 8
    for w in st_.workers:
        w.sched.kv.check()
        assert not w.sched.has_work
    again = simulate(load_trace(path), cfg)
    pd.testing.assert_frame_equal(again.extra["planner"].timeline(), tl)
    assert [(r.worker, r.first_token, r.last_token) for r in again.requests] == \
        [(r.worker, r.first_token, r.last_token) for r in st_.requests]


def test_static_run_reports_gpu_seconds_and_goodput(tmp_path):
    rows = [{"timestamp": 100 * i, "input_length": 1000, "output_length": 20, "hash_ids": [i, i + 100]}
            for i in range(10)]
    trace = load_rows(tmp_path, rows, 512)
    cfg = RunConfig(workers=3, engine=MockerArgs(timing="fixed", timing_params={"prefill_ms": 10, "decode_ms": 5}),
                    slo={"ttft_ms": 12, "itl_ms": 10})
    df, s = summarize_state(simulate(trace, cfg))
    assert s["gpu_seconds"] == pytest.approx(3 * s["duration_s"]) and s["mean_gpus"] == pytest.approx(3)
    # every request: TTFT = 10 ms prefill, ITL 5 ms → all meet; with a 9 ms TTFT objective none does
    assert s["goodput"]["attainment"] == 1.0 and s["goodput"]["requests"] == 10
    cfg9 = cfg.model_copy(update={"slo": cfg.slo.model_copy(update={"ttft_ms": 9.0})})
    assert summarize_state(simulate(trace, cfg9))[1]["goodput"]["attainment"] == 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(), mode=st.sampled_from(router_modes()), disagg=st.booleans(), n=st.integers(1, 3),
       target=st.sampled_from(["sla", "throughput", "latency"]), startup=st.sampled_from([0.0, 0.003, 0.02]),
       predictor=st.sampled_from(["constant", "kalman", "moving-average"]), ff=st.booleans())
def test_invariants_hold_while_the_planner_scales(tmp_path_factory, sc, mode, disagg, n, target, startup, predictor,
                                                  ff):
    """Tiny intervals make the planner start, cancel and drain workers mid-request on random traces."""
    rows, eng = sc
    trace = load_rows(tmp_path_factory.mktemp("pl"), rows, 128)
    planner = PlannerConfig(optimization_target=target, load_interval_s=0.005, throughput_interval_s=0.03,
                            load_min_observations=1, startup_time_s=startup, predictor=predictor, max_gpu_budget=6,
                            load_down_sensitivity=1.0)
    cfg = RunConfig(router_mode=mode, trace_block_size=128, fast_forward=ff, engine=MockerArgs(**eng),
                    workers=n, planner=planner,
                    disagg=DisaggConfig(prefill_workers=n, decode_workers=1) if disagg else None)
    st_ = simulate(trace, cfg)
    reqs = st_.requests
    assert len(reqs) == trace.n_requests
    for r in reqs:
        if r.status == "done":
            assert r.generated == r.osl and r.arrival <= r.routed <= r.first_token <= r.last_token
        else:
            assert r.status == "failed" and r.failure, (r.status, r.failure)
    for w in st_.workers:
        assert not w.sched.running and not w.sched.waiting
        assert w.sched.kv.active == {} and w.sched.kv.n_partial == 0
        w.sched.kv.check()
    tl = st_.extra["planner"].timeline()
    assert (tl["ready"] >= 1).all() and (tl["gpus"] == tl["starting"] + tl["ready"] + tl["draining"]).all()
    assert max(_levels(tl, "starting", "ready")) <= 6                              # targets within the budget
    values, counts = st_.gaps.arrays()
    assert int(counts.sum()) == sum(max(r.generated - 1, 0) for r in reqs)


def test_run_cli_with_the_planner(tmp_path):
    from typer.testing import CliRunner

    from dynosim.cli import app

    p = tmp_path / "step.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in step_rows(3.0, 4.0, seg_s=120.0, isl=8192, osl=32)))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", "--trace", str(p), "--router-mode", "kv", "--planner",
                                 "--planner-predictor", "constant", "--planner-startup-s", "10",
                                 "--planner-gpu-budget", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "replica timeline" in r.output and "goodput" in r.output
    tl = pd.read_csv(out / "replicas.csv")
    assert tl["ready"].max() >= 2 and (tl["starting"] + tl["ready"] <= 4).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "replicas.parquet"), tl, check_dtype=False)
    assert (out / "replicas.png").stat().st_size > 10_000
    s = json.loads((out / "summary.json").read_text())
    assert s["planner"]["pools"]["workers"]["peak_ready"] == tl["ready"].max()
    # a deployment file with a planner section; bad planner settings name the field
    cfgf = tmp_path / "d.yaml"
    cfgf.write_text("workers: 2\nplanner: {predictor: constant, max_gpu_budget: 1}\n")
    r = CliRunner().invoke(app, ["run", "--trace", str(p), "--config", str(cfgf)])
    assert r.exit_code == 2 and "max_gpu_budget=1" in r.output
    cfgf.write_text("planner: {predictor: oracle}\n")
    r = CliRunner().invoke(app, ["run", "--trace", str(p), "--config", str(cfgf)])
    assert r.exit_code == 2 and "planner.predictor" in r.output


@pytest.mark.parametrize("name", ["planner_agg.yaml", "planner_disagg.yaml"])
def test_example_planner_deployments_run(name):
    from pathlib import Path

    from typer.testing import CliRunner

    from dynosim.cli import app

    root = Path(__file__).resolve().parents[1]
    r = CliRunner().invoke(app, ["run", "--trace", str(root / "examples" / "traces" / "conversation_1k.jsonl"),
                                 "--limit", "300", "--arrival-speedup", "4", "--config", str(root / "examples" / name),
                                 "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["requests"]["completed"] == 300 and s["planner"]["config"]["max_gpu_budget"] == 16
    assert set(s["planner"]["pools"]) == ({"prefill", "decode"} if "disagg" in name else {"workers"})
    if "disagg" in name:
        assert s["planner"]["pools"]["prefill"]["gpus_per_worker"] == 2 and s["num_gpus"] == 6
