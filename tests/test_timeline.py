"""The run's timeline (per-worker and per-pool time series) and the pass trace events: they change no
result, follow the documented schema, count passes exactly (fast-forwarded stretches included), and
reach the user through the API, the saved files and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import dynosim
from dynosim.cli import app
from dynosim.config import DisaggConfig, RouterParams, RunConfig
from dynosim.disagg.transfer import TransferConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.metrics.timeline import COLUMNS, POOL_COLUMNS, WORKER_COLUMNS, TimelineSampler, interval_s
from dynosim.metrics.trace_events import pass_kind, trace_events
from dynosim.planner import PlannerConfig
from dynosim.sim.simulation import simulate, summarize_state
from dynosim.traces.mooncake import load_trace

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "traces" / "conversation_1k.jsonl"
FIXED = {"timing": "fixed", "timing_params": {"prefill_ms": 7.0, "decode_ms": 3.3}}
runner = CliRunner()


def _trace(tmp_path, rows, tbs=512):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_trace(p, trace_block_size=tbs)


def _disagg(p=2, d=3, latency_ms=0.0):
    return DisaggConfig(prefill_workers=p, decode_workers=d,
                        transfer=TransferConfig(bandwidth_gbps=50.0, latency_ms=latency_ms))


SCENARIOS = {
    "agg kv": lambda: RunConfig(workers=4, router_mode="kv"),
    "agg queue": lambda: RunConfig(workers=2, router_mode="kv", arrival_speedup=4.0,
                                   router=RouterParams(queue_threshold=0.5)),
    "disagg": lambda: RunConfig(router_mode="kv", disagg=_disagg()),
    "planner": lambda: RunConfig(workers=1, router_mode="kv", arrival_speedup=4.0,
                                 planner=PlannerConfig(startup_time_s=5.0, load_interval_s=2.0, max_gpu_budget=4)),
    "closed loop": lambda: RunConfig(workers=2, concurrency=16),
}


@pytest.fixture(scope="module")
def sample():
    return {s: load_trace(SAMPLE, speedup=s, limit=150) for s in (1.0, 4.0)}


def _run(trace, cfg, **kw):
    st = simulate(trace, cfg, **kw)
    return st, *summarize_state(st)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_timeline_and_pass_log_change_no_result(sample, name):
    cfg = SCENARIOS[name]()
    trace = sample[cfg.arrival_speedup]
    _, df0, s0 = _run(trace, cfg, timeline_points=0)
    for kw in ({"timeline_points": 300}, {"timeline_points": 3, "record_passes": True}):
        st, df, s = _run(trace, cfg, **kw)
        assert json.dumps(s, sort_keys=True, default=str) == json.dumps(s0, sort_keys=True, default=str), kw
        pd.testing.assert_frame_equal(df, df0)
        assert len(st.extra["timeline"].frame())


def test_frame_follows_the_documented_schema(sample):
    st = simulate(sample[1.0], RunConfig(router_mode="kv", disagg=_disagg()), timeline_points=50)
    tl = st.extra["timeline"].frame()
    assert list(tl.columns) == COLUMNS == ["time_s", "pool", "worker", "running", "waiting", "kv_used_blocks",
                                           "kv_cached_blocks", "kv_total_blocks", "tokens_scheduled", "passes",
                                           "router_queue", "transfers_in_flight", "replicas"]
    assert tl["time_s"].dtype == np.float64 and tl["worker"].dtype == np.int64
    assert all(tl[c].dtype == np.float64 for c in WORKER_COLUMNS + POOL_COLUMNS)
    assert list(dict.fromkeys(tl["pool"])) == ["prefill", "decode"]
    pool_rows, worker_rows = tl[tl["worker"] == -1], tl[tl["worker"] >= 0]
    assert pool_rows[WORKER_COLUMNS].isna().all().all() and worker_rows[POOL_COLUMNS].isna().all().all()
    assert worker_rows[WORKER_COLUMNS].notna().all().all()
    # every sample: one pool row per pool, then each of its workers, in order
    dt = interval_s(tl)
    times = np.unique(tl["time_s"])
    assert np.allclose(times, dt * np.arange(1, len(times) + 1))
    assert (tl.groupby("time_s").size() == 2 + 2 + 3).all()
    assert list(tl[tl["time_s"] == times[0]][["pool", "worker"]].itertuples(index=False, name=None)) == \
        [("prefill", -1), ("prefill", 0), ("prefill", 1), ("decode", -1), ("decode", 0), ("decode", 1), ("decode", 2)]
    # the interval: the trace's arrival span over the points asked for; sampling runs past the last token
    span_s = (max(r.arrival for r in st.requests) - min(r.arrival for r in st.requests)) / 1000
    assert dt == pytest.approx(span_s / 50)
    assert times[-1] >= max(r.last_token for r in st.requests) / 1000 > times[-1] - dt
    assert (worker_rows["kv_total_blocks"] == 16384).all()
    assert (worker_rows["kv_used_blocks"] + worker_rows["kv_cached_blocks"] <= 16384).all()
    assert worker_rows["kv_cached_blocks"].max() > 0 and worker_rows["running"].max() > 0
    assert pool_rows.groupby("pool", sort=False)["replicas"].max().to_dict() == {"prefill": 2, "decode": 3}
    assert pool_rows["router_queue"].isna().all()   # this router does not queue


def test_passes_and_tokens_equal_stepping_every_pass(sample):
    """Stretches are counted by their passes' own end times: the same series as without fast-forward."""
    trace = sample[1.0]
    fast = simulate(trace, RunConfig(workers=2), timeline_points=120)
    slow = simulate(trace, RunConfig(workers=2, fast_forward=False), timeline_points=120)
    assert fast.gaps.runs > 0 and slow.gaps.runs == 0
    a, b = fast.extra["timeline"].frame(), slow.extra["timeline"].frame()
    pd.testing.assert_frame_equal(a[["time_s", "pool", "worker", "tokens_scheduled", "passes", "running", "waiting"]],
                                  b[["time_s", "pool", "worker", "tokens_scheduled", "passes", "running", "waiting"]])
    per_worker = a[a["worker"] >= 0].groupby("worker")[["passes", "tokens_scheduled"]].sum()
    for w in fast.workers:
        assert per_worker.loc[w.wid, "passes"] == w.passes_done > 0
        assert per_worker.loc[w.wid, "tokens_scheduled"] == w.tokens_done


def test_a_stretch_spanning_several_samples_is_split_by_pass_end_times(tmp_path):
    # one worker, 512-token blocks: decode stretches of up to ~500 passes × 3.3 ms, longer than the interval
    from dynosim.sim.simulation import Parts
    from dynosim.sim.worker import Worker

    inside: list[int] = []   # passes a sample counted from a stretch still in flight

    class Spy(Worker):
        def progress(self, t):
            before = self.passes_done
            out = super().progress(t)
            if self._ends is not None:
                inside.append(out[0] - before)
            return out

    rows = [{"timestamp": t, "input_length": 600, "output_length": 1500, "hash_ids": [i, 100 + i]}
            for i, t in enumerate((0, 1000))]
    cfg = RunConfig(workers=1, engine=MockerArgs(block_size=512, **FIXED))
    st = simulate(_trace(tmp_path, rows), cfg, timeline_points=8, record_passes=True, parts=Parts(worker=Spy))
    tl = st.extra["timeline"].frame()
    w = tl[tl["worker"] == 0]
    assert len(w) <= 2 * 8
    assert len([k for k in inside if k > 0]) >= 3    # samples fell inside stretches, mid-way
    log = st.extra["passes"][("aggregated", 0)]
    assert len(log) == st.workers[0].passes_done == w["passes"].sum()
    ends = np.array([p[0] + p[1] for p in log])
    tokens = np.array([p[3] for p in log])
    edges = np.concatenate(([0.0], w["time_s"].to_numpy() * 1000))
    bins = np.searchsorted(edges, ends, side="left")   # a pass ending in (edge[k-1], edge[k]] -> sample k
    assert w["passes"].tolist() == np.bincount(bins, minlength=len(edges))[1:].tolist()
    assert w["tokens_scheduled"].tolist() == np.bincount(bins, weights=tokens, minlength=len(edges))[1:].tolist()


def test_long_runs_coarsen_to_a_bounded_uniform_grid(tmp_path):
    rows = [{"timestamp": 0, "input_length": 600, "output_length": 3000, "hash_ids": [1, 2]}]
    st = simulate(_trace(tmp_path, rows), RunConfig(workers=1, engine=MockerArgs(**FIXED)), timeline_points=10)
    tl = st.extra["timeline"].frame()
    w = tl[tl["worker"] == 0]
    dt = interval_s(tl)
    # one arrival: the interval starts at 1 ms and doubles until 3000 × 3.3 ms fits in 20 samples
    assert dt == pytest.approx(0.001 * 2 ** round(math.log2(dt / 0.001)))
    assert 10 <= len(w) <= 20
    assert np.allclose(w["time_s"], dt * np.arange(1, len(w) + 1))
    assert w["passes"].sum() == st.workers[0].passes_done == 3000
    assert w["tokens_scheduled"].sum() == 600 + 2999


def test_planner_replicas_and_slots_without_an_engine(tmp_path):
    """Two workers; the latency target removes one at 1 s; it drains its requests (~6.6 s), then holds no engine."""
    rows = [{"timestamp": 0, "input_length": 512, "output_length": 2000, "hash_ids": [i]} for i in range(4)]
    cfg = RunConfig(workers=2, engine=MockerArgs(**FIXED),
                    planner=PlannerConfig(optimization_target="latency", load_interval_s=1.0,
                                          load_min_observations=1, startup_time_s=0))
    st = simulate(_trace(tmp_path, rows), cfg, timeline_points=100)
    tl = st.extra["timeline"].frame()
    changes = st.extra["planner"].timeline()
    pool = tl[tl["worker"] == -1]
    for t, replicas in zip(pool["time_s"], pool["replicas"]):
        ready = changes[changes["time_s"] <= t + 1e-12]["ready"].iloc[-1]
        assert replicas == ready, t
    assert pool["replicas"].iloc[0] == 2 and pool["replicas"].iloc[-1] == 1
    drained = changes[changes["reason"] == "drained"]["time_s"].iloc[0]
    w1 = tl[tl["worker"] == 1]
    before, after = w1[w1["time_s"] < drained], w1[w1["time_s"] > drained]
    assert before["running"].notna().all() and before["running"].max() == 2
    assert len(after) and after[["running", "waiting", "kv_used_blocks", "kv_total_blocks"]].isna().all().all()
    assert (after["passes"].iloc[1:] == 0).all()   # the first interval after it still holds its last passes
    assert w1["passes"].sum() == st.extra["planner"].retired[0].passes_done


def test_transfers_in_flight_on_the_decode_pool(tmp_path):
    """Three requests 10 s apart whose hand-off takes 2 s: each is in flight at exactly two 1 s samples."""
    rows = [{"timestamp": t, "input_length": 600, "output_length": 4, "hash_ids": [i, 100 + i]}
            for i, t in enumerate((0, 10_000, 20_000))]
    cfg = RunConfig(disagg=_disagg(p=1, d=1, latency_ms=2000.0), engine=MockerArgs(**FIXED))
    st = simulate(_trace(tmp_path, rows), cfg, timeline_points=20)
    tl = st.extra["timeline"].frame()
    assert interval_s(tl) == pytest.approx(1.0)
    pool = tl[tl["worker"] == -1].set_index(["pool", "time_s"])
    assert pool.loc["prefill", "transfers_in_flight"].isna().all()
    moving = pool.loc["decode", "transfers_in_flight"]
    assert moving.max() == 1 and moving.sum() == 6
    assert list(moving[moving > 0].index) == pytest.approx([1, 2, 11, 12, 21, 22])


def test_router_queue_counts_requests_held_by_the_router(sample):
    cfg = SCENARIOS["agg queue"]()
    st = simulate(sample[4.0], cfg, timeline_points=200)
    tl = st.extra["timeline"].frame()
    pool = tl[tl["worker"] == -1]
    arrival = np.array([r.arrival for r in st.requests])
    routed = np.array([r.routed for r in st.requests])
    expected = [int(((arrival <= t * 1000 + 1e-9) & (routed > t * 1000 + 1e-9)).sum()) for t in pool["time_s"]]
    assert pool["router_queue"].tolist() == expected
    assert max(expected) > 0


def test_trace_events_match_every_pass(tmp_path):
    trace = load_trace(SAMPLE, limit=60)
    cfg = RunConfig(router_mode="kv", disagg=_disagg())
    path = tmp_path / "passes.json"
    res = dynosim.run(trace, config=cfg, trace_events=path, timeline_points=0)
    assert res.timeline is None
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    meta = {(e["pid"], e.get("tid"), e["name"]): e["args"] for e in events if e["ph"] == "M"}
    assert meta[(1, 0, "process_name")] == {"name": "pool prefill"}
    assert meta[(2, 0, "process_name")] == {"name": "pool decode"}
    assert meta[(2, 2, "thread_name")] == {"name": "worker 2"}
    x = [e for e in events if e["ph"] == "X"]
    st = res.extra["state"]
    by_track: dict[tuple[int, int], list[dict]] = {}
    for e in x:
        by_track.setdefault((e["pid"], e["tid"]), []).append(e)
    workers = {(1 if w.sched.role == "prefill" else 2, w.wid): w for w in st.workers}
    assert set(by_track) == set(workers)
    for key, evs in by_track.items():
        w = workers[key]
        assert len(evs) == w.passes_done
        assert sum(e["args"]["scheduled_tokens"] for e in evs) == w.tokens_done
        assert sum(e["dur"] for e in evs) == pytest.approx(w.busy_ms * 1000, rel=1e-9)
        ts = np.array([e["ts"] for e in evs])
        dur = np.array([e["dur"] for e in evs])
        assert (np.diff(ts) >= 0).all() and (ts[1:] >= ts[:-1] + dur[:-1] - 1e-3).all()   # one pass at a time
        for e in evs:
            a = e["args"]
            assert e["name"] == a["kind"] == pass_kind(a["scheduled_tokens"], a["prefill_tokens"])
            assert a["batch"] >= 1 and a["scheduled_tokens"] >= a["batch"]
    kinds = {(pid, e["name"]) for (pid, _), evs in by_track.items() for e in evs}
    assert (1, "prefill") in kinds and (2, "decode") in kinds and not any(k == "prefill" for p, k in kinds if p == 2)
    # the same passes with fast-forward off (every pass stepped on its own)
    slow = tmp_path / "slow.json"
    dynosim.run(trace, config=cfg.model_copy(update={"fast_forward": False}), trace_events=slow, timeline_points=0)
    assert _x_events(slow) == _x_events(path)


def _x_events(path):
    return sorted((e["pid"], e["tid"], e["ts"], e["dur"], json.dumps(e["args"], sort_keys=True))
                  for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X")


def test_pass_kinds_and_batches_of_a_hand_made_log():
    doc = trace_events({("aggregated", 0): [(10.0, 5.0, 2, 600, 600), (15.0, 5.0, 3, 102, 100),
                                            (20.0, 5.0, 3, 3, 0)]}, t0_ms=10.0)
    x = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"], e["args"]["batch"]) for e in x] == \
        [("prefill", 0.0, 5000.0, 2), ("mixed", 5000.0, 5000.0, 3), ("decode", 10000.0, 5000.0, 3)]


def test_api_saves_the_timeline_and_its_plot(tmp_path):
    from matplotlib.image import imread

    res = dynosim.run(SAMPLE, workers=3, limit=120, timeline_points=40)
    assert res.timeline is not None and set(res.timeline["worker"]) == {-1, 0, 1, 2}
    out = res.save(tmp_path / "out")
    back = pd.read_parquet(out / "timeline.parquet")
    pd.testing.assert_frame_equal(back, res.timeline)
    img = imread(out / "timeline.png")
    assert img.shape[:2] == (950, 1500) and img[..., :3].std() > 0.05
    assert dynosim.run(SAMPLE, workers=1, limit=20, timeline_points=0).timeline is None
    with pytest.raises(ValueError, match="timeline_points"):
        dynosim.run(SAMPLE, limit=5, timeline_points=-1)
    with pytest.raises(ValueError, match="directory not found"):
        dynosim.run(SAMPLE, limit=5, trace_events=tmp_path / "missing" / "x.json")


def test_plot_draws_pools_slots_without_engines_and_many_workers(tmp_path):
    from dynosim.metrics.plots import plot_timeline

    st = simulate(load_trace(SAMPLE, limit=60), RunConfig(workers=32, router_mode="kv"), timeline_points=30)
    tl = st.extra["timeline"].frame()
    tl.loc[(tl["worker"] == 5) & (tl["time_s"] > 10), ["running", "kv_used_blocks", "kv_total_blocks"]] = np.nan
    assert plot_timeline(tl, tmp_path / "a.png", title="32 workers").stat().st_size > 20_000
    st = simulate(load_trace(SAMPLE, limit=60), RunConfig(router_mode="kv", disagg=_disagg()), timeline_points=30)
    assert plot_timeline(st.extra["timeline"].frame(), tmp_path / "b.png").stat().st_size > 20_000


def test_cli_writes_the_timeline_and_trace_events(tmp_path):
    out, ev = tmp_path / "out", tmp_path / "passes.json"
    res = runner.invoke(app, ["run", "-t", str(SAMPLE), "-w", "2", "--limit", "80", "--out", str(out),
                              "--timeline-points", "25", "--trace-events", str(ev)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "timeline.parquet/png" in text and f"wrote {ev}" in text and "ui.perfetto.dev" in text
    tl = pd.read_parquet(out / "timeline.parquet")
    assert 25 <= tl["time_s"].nunique() <= 50 and (out / "timeline.png").exists()
    n_passes = sum(1 for e in json.loads(ev.read_text())["traceEvents"] if e["ph"] == "X")
    assert n_passes == tl["passes"].sum() > 0
    off = tmp_path / "off"
    res = runner.invoke(app, ["run", "-t", str(SAMPLE), "--limit", "20", "--out", str(off), "--timeline-points", "0"])
    assert res.exit_code == 0, res.output
    assert not (off / "timeline.parquet").exists() and "timeline.parquet" not in " ".join(res.output.split())


@pytest.mark.parametrize("flags, message", [
    (["--timeline-points", "-1"], "error: --timeline-points: must be >= 0"),
    (["--trace-events", "{tmp}/missing/x.json"], "error: --trace-events: directory not found"),
    (["--trace-events", "{tmp}"], "error: --trace-events: {tmp} is a directory"),
])
def test_cli_rejects_bad_timeline_flags_before_simulating(tmp_path, flags, message):
    flags = [f.format(tmp=tmp_path) for f in flags]
    res = runner.invoke(app, ["run", "-t", str(SAMPLE), "--limit", "5", *flags])
    assert res.exit_code == 2
    assert message.format(tmp=tmp_path) in " ".join(res.output.split())
    assert "replaying" not in res.output and "Traceback" not in res.output
