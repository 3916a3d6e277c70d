"""Sweeps: grid expansion, the resumable store (incl. SIGKILL mid-run), executors, Pareto, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from dynosim.sweeps.objectives import Objectives
from dynosim.sweeps.pareto import aggregate, frontier, pareto_mask
from dynosim.sweeps.runner import execute
from dynosim.sweeps.spec import SweepSpec, expand, point_id
from dynosim.sweeps.store import ResultStore, StoreError
from dynosim.sweeps.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "examples" / "traces" / "conversation_1k.jsonl"
SMALL = dict(gpu_budget=4, modes=["agg", "disagg"], router_modes=["kv", "round-robin"],
             arrival_speedups=[2.0, 8.0], prefill_fractions=[0.25, 0.5])


def test_default_spec_expands_a_useful_grid():
    pts = expand(SweepSpec())
    # agg 16 workers, disagg 4P12D and 8P8D; × 2 routers × 4 loads
    assert len(pts) == 3 * 2 * 4
    assert {p.labels["config"] for p in pts} >= {"agg 16xTP1 kv", "disagg 4P12D-TP1 kv", "disagg 8P8D-TP1 round-robin"}
    assert all(p.config.num_gpus == 16 for p in pts)
    assert len({p.id for p in pts}) == len(pts)
    assert [p.id for p in expand(SweepSpec())] == [p.id for p in pts]          # stable
    assert pts[0].id == point_id(pts[0].config)


def test_grid_over_tp_engine_router_params_and_seeds():
    spec = SweepSpec(gpu_budget=8, modes=["agg", "disagg"], tp=[1, 2], tp_speedup={2: 1.7},
                     prefill_fractions=[0.5], router_modes=["kv"], router_params={"temperature": [0.0, 0.5]},
                     engine={"num_gpu_blocks": 4096}, engine_grid={"max_num_seqs": [64, 128]},
                     arrival_speedups=[1.0], repeats=3)
    pts = expand(spec)
    assert len(pts) == 2 * 2 * 2 * 2 * 3             # (agg, disagg) × TP × temperature × max_num_seqs × seeds
    tp2 = [p for p in pts if p.labels["tp"] == 2 and p.labels["mode"] == "agg"]
    assert tp2[0].config.workers == 4 and tp2[0].config.engine.gpus_per_worker == 2
    assert tp2[0].config.engine.speedup_ratio == 1.7 and tp2[0].config.engine.num_gpu_blocks == 4096
    d = [p for p in pts if p.labels["mode"] == "disagg" and p.labels["tp"] == 1][0]
    assert (d.config.disagg.prefill_workers, d.config.disagg.decode_workers) == (4, 4)
    assert {p.labels["seed"] for p in pts} == {0, 1, 2}
    names = {p.labels["config"] for p in pts}
    assert "agg 4xTP2 kv temperature=0.5 max_num_seqs=128" in names           # grid values name the point


@pytest.mark.parametrize("kw,match", [
    ({"tp": [3]}, "not a multiple"), ({"prefill_fractions": [1.0]}, "strictly between"),
    ({"router_params": {"bogus": [1]}}, "unknown field 'bogus'"), ({"engine_grid": {"nope": [1]}}, "unknown field"),
    ({"modes": []}, "at least 1"), ({"arrival_speedups": [0]}, "> 0")])
def test_spec_validation(kw, match):
    with pytest.raises(ValidationError, match=match):
        SweepSpec(**kw)


def test_store_appends_and_drops_a_torn_line(tmp_path):
    with ResultStore.open_for_sweep(tmp_path) as s:
        s.append({"id": "a", "x": 1})
        s.append({"id": "b", "x": 2})
    with open(s.path, "ab") as fh:
        fh.write(b'{"id": "c", "x"')                  # killed mid-write
    assert ResultStore(tmp_path).torn == 1 and s.path.read_bytes().endswith(b'"x"')   # a reader cuts nothing
    with ResultStore.open_for_sweep(tmp_path) as s2:
        assert len(s2) == 2 and "c" not in s2 and s2.torn == 1
        s2.append({"id": "c", "x": 3})
    assert [json.loads(x)["id"] for x in s2.path.read_text().splitlines()] == ["a", "b", "c"]
    assert s2.frame(["c", "a"])["x"].tolist() == [3, 1]


@pytest.mark.parametrize("bad,match", [
    (b'{"id": "b", "x"\n', r"line 2: not valid JSON"),                      # a damaged middle line
    (b'{"x": 2}\n', r"line 2: not a result \(a JSON object with a string 'id'\)"),   # was KeyError: 'id'
    (b'[1, 2]\n', r"line 2: not a result"),
    (b'{"id": "b", "n": "\xff"}\n', r"line 2: not UTF-8")])
def test_store_refuses_a_damaged_line_and_cuts_nothing(tmp_path, bad, match):
    """Only a torn last line is dropped; any other bad line is an error naming file and line, and the finished
    points after it stay on disk (the store used to stop at the bad line and truncate the file there)."""
    path = tmp_path / "results.jsonl"
    content = b'{"id": "a"}\n' + bad + b'{"id": "c"}\n{"id": "d"}\n'
    path.write_bytes(content)
    for opener in (ResultStore, ResultStore.open_for_sweep):
        with pytest.raises(StoreError, match=match) as err:
            opener(tmp_path)
        assert str(path) in str(err.value)
    assert path.read_bytes() == content
    from dynosim.sweeps.store import LOCK
    with ResultStore.open_for_sweep(tmp_path / "again"):            # the failed open released its lock
        pass
    assert (tmp_path / LOCK).exists()
    with ResultStore.open_for_sweep(tmp_path, fresh=True) as s:     # --fresh starts over
        assert len(s) == 0 and not path.exists()


def test_a_second_sweep_into_a_folder_in_use_fails_at_once(tmp_path):
    with ResultStore.open_for_sweep(tmp_path / "o"):
        with pytest.raises(StoreError, match=rf"--out {tmp_path / 'o'} is in use by another sweep \(pid {os.getpid()}\)"):
            ResultStore.open_for_sweep(tmp_path / "o")
        r = subprocess.run([sys.executable, "-m", "dynosim.cli", "sweep", "--trace", str(TRACE), "--limit", "20",
                            "--budget", "2", "--mode", "agg", "--router-mode", "kv", "--load", "1", "--executor",
                            "serial", "--no-report", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "300"})
        assert r.returncode == 2, r.stderr
        assert f"error: --out {tmp_path / 'o'} is in use by another sweep (pid {os.getpid()})" in r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "o" / "results.jsonl").exists()
    with ResultStore.open_for_sweep(tmp_path / "o"):                 # released when the first sweep ends
        pass


def _strip(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_s"]).reset_index(drop=True)


def test_local_pool_equals_serial_and_a_rerun_resumes(tmp_path):
    spec = SweepSpec(**SMALL)
    a = sweep(TRACE, spec, tmp_path / "serial", executor="serial", limit=60)
    b = sweep(TRACE, spec, tmp_path / "pool", executor="local", jobs=2, limit=60)
    assert a.ran == b.ran == len(expand(spec)) == 12
    pd.testing.assert_frame_equal(_strip(a.results), _strip(b.results))
    again = sweep(TRACE, spec, tmp_path / "serial", executor="serial", limit=60)
    assert again.ran == 0
    pd.testing.assert_frame_equal(_strip(again.results), _strip(a.results))
    tf = pd.read_csv(tmp_path / "serial" / "pareto_ttft.csv")
    pts = a.points
    for _, r in tf.iterrows():           # nothing beats a TTFT-frontier point on both throughput and TTFT
        assert not ((pts["output_tps_per_gpu"] > r["output_tps_per_gpu"]) & (pts["ttft_p90"] < r["ttft_p90"])).any()
    for name in ("results.parquet", "points.csv", "pareto.csv", "pareto_ttft.csv", "pareto.png", "spec.yaml",
                 "recommendation.json", "pareto_x2.png", "pareto_x8.png"):
        assert (tmp_path / "serial" / name).stat().st_size > 0
    assert set(a.frontier["config"]) <= set(a.points["config"]) and len(a.frontier) >= 1


def test_ray_executor_on_a_local_instance_equals_serial(tmp_path, monkeypatch):
    """``--executor ray`` runs the same points as Ray tasks on a local instance; results are identical."""
    pytest.importorskip("ray")
    spec = SweepSpec(**dict(SMALL, modes=["agg"], router_modes=["kv"]))
    a = sweep(TRACE, spec, tmp_path / "serial", executor="serial", limit=60)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")          # a throwaway local instance needs no token
    b = sweep(TRACE, spec, tmp_path / "ray", executor="ray", jobs=2, limit=60)
    assert b.ran == len(expand(spec)) == 2
    pd.testing.assert_frame_equal(_strip(a.results), _strip(b.results))


def test_sigkilled_sweep_resumes_to_identical_results(tmp_path):
    """A sweep killed with SIGKILL mid-run, then resumed, gives what an uninterrupted run gives."""
    spec_path = tmp_path / "spec.yaml"
    spec = dict(SMALL, arrival_speedups=[1.0, 2.0, 4.0, 8.0])
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "dynosim.cli", "sweep", "--trace", str(TRACE), "--spec", str(spec_path),
           "--limit", "120", "--executor", "serial", "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "200"})
    results = tmp_path / "killed" / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = results.read_text().count("\n")
    assert 3 <= n_before < 24, "the sweep must be killed mid-run"
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert f"{24 - n_before} point(s)" in r.stderr.replace("\n", " ") or "from the store" in r.stderr
    resumed = pd.read_parquet(tmp_path / "killed" / "results.parquet")
    fresh = sweep(TRACE, SweepSpec(**spec), tmp_path / "fresh", executor="serial", limit=120)
    pd.testing.assert_frame_equal(_strip(resumed), _strip(fresh.results))


def test_pareto_mask_by_hand():
    x = np.array([1, 2, 3, 2, 1, 3, np.nan])
    y = np.array([5, 4, 1, 3, 5, 0.5, 9])
    # (2,3) is beaten by (2,4); (3,0.5) by (3,1); duplicates (1,5) both stay; NaN never
    assert pareto_mask(x, y).tolist() == [True, True, True, False, True, False, False]


def test_aggregate_confidence_interval_and_slo_filter():
    df = pd.DataFrame({"config": ["a", "a", "b"], "mode": ["agg"] * 3, "tp": [1] * 3, "workers": [2] * 3,
                       "prefill": [0] * 3, "decode": [0] * 3, "router": ["kv"] * 3, "load": [1.0] * 3,
                       "seed": [0, 1, 0], "output_tps_per_gpu": [1.0, 3.0, 5.0], "tps_user_mean": [10.0, 10.0, 1.0],
                       "ttft_p90": [100.0, 100.0, 900.0], "itl_mean": [10.0, 12.0, 30.0], "e2e_p90": [1.0] * 3,
                       "failed": [0, 0, 0], "wall_s": [0.1, 0.2, 0.3]})
    agg = aggregate(df)
    a = agg[agg["config"] == "a"].iloc[0]
    assert a["repeats"] == 2 and a["output_tps_per_gpu"] == 2.0
    # t(0.975, 1) × sd(1, 3) / √2 = 12.706 × 1.414 / 1.414
    assert a["output_tps_per_gpu_ci"] == pytest.approx(12.7062, rel=1e-4)
    assert agg[agg["config"] == "b"].iloc[0]["output_tps_per_gpu_ci"] == 0.0
    assert Objectives(ttft_p90_ms=500).meets(agg).tolist() == [True, False]
    assert Objectives(itl_mean_ms=20, e2e_p90_ms=0.5).meets(agg).tolist() == [False, False]
    front = frontier(agg)
    assert front["config"].tolist() == ["b", "a"]                 # neither beats the other on both axes


def test_execute_rejects_an_unknown_executor():
    with pytest.raises(ValueError, match="unknown executor"):
        execute(expand(SweepSpec(**SMALL))[:1], str(TRACE), executor="slurm")


def test_cli_sweep(tmp_path):
    from typer.testing import CliRunner

    from dynosim.cli import app

    r = CliRunner().invoke(app, ["sweep", "--trace", str(TRACE), "--limit", "60", "--budget", "4", "--mode", "agg",
                                 "--load", "1,4", "--router-mode", "kv", "--executor", "serial", "--ttft-p90", "5000",
                                 "--out", str(tmp_path / "o")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    # the answer comes first, then the per-load table
    assert r.output.index("recommendation") < r.output.index("best deployment per load")
    assert "run agg 4xTP1 kv" in r.output
    pts = pd.read_csv(tmp_path / "o" / "points.csv")
    assert len(pts) == 2 and set(pts["load"]) == {1.0, 4.0}
    rec = json.loads((tmp_path / "o" / "recommendation.json").read_text())
    assert rec["objectives"]["ttft_p90_ms"] == 5000 and rec["feasible"]
    # an objective nothing meets: the closest points and what they missed, exit 4
    r = CliRunner().invoke(app, ["sweep", "--trace", str(TRACE), "--limit", "60", "--budget", "4", "--mode", "agg",
                                 "--load", "1", "--router-mode", "kv", "--executor", "serial", "--ttft-p90", "1",
                                 "--out", str(tmp_path / "none")], env={"COLUMNS": "200"})
    assert r.exit_code == 4, r.output
    assert "Nothing meeting TTFT p90 ≤ 1 ms" in r.output and "closest at ×1" in r.output
    assert "UserWarning" not in r.output
    r = CliRunner().invoke(app, ["sweep", "--trace", str(TRACE), "--tp", "3", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a multiple" in r.output
    r = CliRunner().invoke(app, ["sweep", "--trace", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "trace not found" in r.output


def test_closed_loop_concurrency_as_the_load_axis(tmp_path):
    spec = SweepSpec(**dict(SMALL, modes=["agg"], router_modes=["kv"], concurrency=[1, 8]))
    pts = expand(spec)
    assert [(p.config.concurrency, p.labels["load"], p.labels["load_kind"]) for p in pts] == \
        [(1, 1.0, "concurrency"), (8, 8.0, "concurrency")]
    res = sweep(TRACE, spec, tmp_path / "c", executor="serial", limit=60)
    by = res.points.set_index("load")
    # more users in flight: more throughput per GPU, slower per user
    assert by.loc[8.0, "output_tps_per_gpu"] > by.loc[1.0, "output_tps_per_gpu"]
    assert by.loc[8.0, "tps_user_mean"] <= by.loc[1.0, "tps_user_mean"]


def test_metric_names_match_the_rows():
    from dynosim.sweeps.runner import METRIC_NAMES, metrics_row

    d = {"mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0}
    summary = {"throughput": {"output_tokens_per_s_per_gpu": 1, "output_tokens_per_s": 1, "requests_per_s": 1},
               "goodput": {"requests_per_s": 1, "attainment": 1}, "tps_user": d, "ttft_ms": d, "itl_ms": d,
               "e2e_ms": d, "prefix_reuse_ratio": 0, "preemptions": 0, "requests": {"completed": 1, "failed": 0},
               "num_gpus": 1, "duration_s": 1}
    assert tuple(metrics_row(summary)) == METRIC_NAMES


def test_repeats_on_resampled_traces_give_real_intervals(tmp_path):
    """Seeds alone do not move a round-robin point; resampled sessions do, and the interval shows it."""
    base = dict(SMALL, modes=["agg"], router_modes=["round-robin"], arrival_speedups=[4.0], repeats=3)
    plain = sweep(TRACE, SweepSpec(**base), tmp_path / "p", executor="serial", limit=120)
    assert plain.points["output_tps_per_gpu_ci"].iloc[0] == 0.0
    res = sweep(TRACE, SweepSpec(**base, resample_fraction=0.7), tmp_path / "r", executor="serial", limit=120)
    assert res.points["repeats"].iloc[0] == 3 and res.points["output_tps_per_gpu_ci"].iloc[0] > 0
    assert set(res.results["completed"]) == {84}                 # 70% of 120 single-turn sessions
    ids = {p.id for p in expand(SweepSpec(**base))}
    assert not ids & {p.id for p in expand(SweepSpec(**base, resample_fraction=0.7))}


def test_trace_resample():
    from dynosim.traces.mooncake import load_trace

    tr = load_trace(TRACE, limit=100)
    a, b = tr.resample(0.5, 1), tr.resample(0.5, 1)
    assert a == b and a.n_sessions == 50 and a.resample(1.0, 3).n_sessions == 50
    assert [s.start_ms for s in a.sessions] == sorted(s.start_ms for s in a.sessions)
    assert tr.resample(0.5, 2) != a
    with pytest.raises(ValueError, match="resample fraction"):
        tr.resample(0.0, 1)
