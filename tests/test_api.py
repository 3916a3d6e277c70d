"""The Python API: ``dynosim.run`` -> RunResult (summary + per-request frame), ``save``, config validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import dynosim
from conftest import write_trace
from dynosim.metrics.collector import REQUEST_COLUMNS
from dynosim.traces.mooncake import load_trace

COLUMNS = [
    "request_id", "session_id", "turn", "line", "worker", "status", "failure", "arrival_ms", "first_token_ms",
    "last_token_ms", "input_tokens", "output_tokens", "reused_tokens", "first_reused_tokens", "ttft_ms", "e2e_ms",
    "itl_ms", "tps_user", "preemptions",
]


def rows(n: int = 12) -> list[dict]:
    out = []
    for i in range(n):
        isl = 200 + 97 * i
        out.append({"timestamp": 25 * i, "input_length": isl, "output_length": 1 + (7 * i) % 40,
                    "hash_ids": [i % 3] + [100 + 10 * i + j for j in range(isl // 512)]})
    # one prompt that can never fit the small engine below
    out.append({"timestamp": 25 * n, "input_length": 5000, "output_length": 4, "hash_ids": list(range(900, 910))})
    return out


ENGINE = {"block_size": 16, "num_gpu_blocks": 200, "max_num_seqs": 8}


@pytest.fixture()
def trace_path(tmp_path):
    return write_trace(tmp_path / "trace.jsonl", rows())


@pytest.fixture()
def result(trace_path):
    return dynosim.run(trace_path, workers=2, engine=ENGINE)


def test_run_returns_documented_frame_and_summary(result):
    assert isinstance(result, dynosim.RunResult)
    df = result.requests
    assert list(df.columns) == COLUMNS == REQUEST_COLUMNS
    assert len(df) == 13 and df["request_id"].tolist() == list(range(13))
    done = df[df["status"] == "done"]
    failed = df[df["status"] == "failed"]
    assert len(done) == 12 and len(failed) == 1
    assert failed["worker"].tolist() == [-1] and math.isnan(failed["ttft_ms"].iloc[0])
    assert set(done["worker"]) == {0, 1}
    # per-request definitions (aiperf)
    np.testing.assert_allclose(done["ttft_ms"], done["first_token_ms"] - done["arrival_ms"])
    np.testing.assert_allclose(done["e2e_ms"], done["last_token_ms"] - done["arrival_ms"])
    multi = done[done["output_tokens"] > 1]
    np.testing.assert_allclose(multi["itl_ms"], (multi["e2e_ms"] - multi["ttft_ms"]) / (multi["output_tokens"] - 1))
    np.testing.assert_allclose(multi["tps_user"], 1000.0 / multi["itl_ms"])
    assert done[done["output_tokens"] == 1]["itl_ms"].isna().all()
    assert (done["ttft_ms"] > 0).all() and (done["reused_tokens"] <= done["input_tokens"]).all()
    # summary
    s = result.summary
    assert s["requests"] == {"total": 13, "completed": 12, "failed": 1, "unfinished": 0}
    assert s["output_tokens"] == int(done["output_tokens"].sum())
    assert s["input_tokens"] == int(done["input_tokens"].sum())
    span_s = (done["last_token_ms"].max() - df["arrival_ms"].min()) / 1000
    assert s["duration_s"] == pytest.approx(span_s)
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(s["output_tokens"] / span_s)
    assert s["throughput"]["output_tokens_per_s_per_gpu"] == pytest.approx(s["output_tokens"] / span_s / 2)
    assert s["prefix_reuse_ratio"] == pytest.approx(done["reused_tokens"].sum() / done["input_tokens"].sum())
    assert s["prefix_reuse_ratio"] > 0
    assert s["ttft_ms"]["mean"] == pytest.approx(done["ttft_ms"].mean())
    assert s["ttft_ms"]["max"] == done["ttft_ms"].max()
    assert s["num_gpus"] == 2
    assert s["run"]["config"]["workers"] == 2 and s["run"]["config"]["engine"]["block_size"] == 16
    assert s["run"]["seed"] == 0 and s["run"]["dynosim_version"] == dynosim.__version__
    m = result.metrics()
    assert {"ttft_ms", "e2e_ms", "itl_ms", "tps_user", "token_gap_ms"} <= set(m.index)
    assert m.loc["ttft_ms", "p50"] == s["ttft_ms"]["p50"]


def test_save_writes_files_that_round_trip(result, tmp_path):
    out = result.save(tmp_path / "out" / "nested")
    assert sorted(p.name for p in out.iterdir()) == ["requests.csv", "requests.parquet", "summary.json",
                                                     "timeline.parquet", "timeline.png"]
    summary = json.loads((out / "summary.json").read_text())
    # json has no NaN equality: compare through the same serialisation
    assert json.dumps(summary, sort_keys=True) == json.dumps(result.summary, sort_keys=True)
    pq = pd.read_parquet(out / "requests.parquet")
    pd.testing.assert_frame_equal(pq, result.requests)
    csv = pd.read_csv(out / "requests.csv", keep_default_na=False, na_values=[""])
    assert list(csv.columns) == COLUMNS
    csv["failure"] = csv["failure"].fillna("")   # an empty cell reads back as missing
    pd.testing.assert_frame_equal(csv, result.requests, check_dtype=False, check_exact=False, rtol=1e-12)


def test_run_accepts_a_config_or_a_loaded_trace(trace_path):
    cfg = dynosim.RunConfig(workers=3, router_mode="rr", engine=dynosim.MockerArgs(**ENGINE), seed=4)
    assert cfg.router_mode == "round-robin"  # alias normalised
    by_cfg = dynosim.run(trace_path, config=cfg)
    trace = load_trace(trace_path)
    by_trace = dynosim.run(trace, config=cfg)
    pd.testing.assert_frame_equal(by_cfg.requests, by_trace.requests)
    assert set(by_cfg.requests["worker"]) == {-1, 0, 1, 2}
    # the n-th routed request goes to worker n mod 3
    routed = by_cfg.requests[by_cfg.requests["worker"] >= 0]
    assert routed["worker"].tolist() == [i % 3 for i in range(len(routed))]
    with pytest.raises(ValueError, match="speedup/trace_block_size differ"):
        dynosim.run(load_trace(trace_path, speedup=2.0), config=cfg)


def test_limit_and_arrival_speedup(trace_path):
    res = dynosim.run(trace_path, limit=5, arrival_speedup=5.0, engine=ENGINE)
    assert len(res.requests) == 5
    assert res.requests["arrival_ms"].tolist() == [0.0, 5.0, 10.0, 15.0, 20.0]


def test_fast_forward_flag_does_not_change_results(trace_path):
    a = dynosim.run(trace_path, workers=2, engine=ENGINE, fast_forward=True)
    b = dynosim.run(trace_path, workers=2, engine=ENGINE, fast_forward=False)
    pd.testing.assert_frame_equal(a.requests, b.requests, check_exact=False, atol=1e-6, rtol=0)
    assert a.summary["token_gap_ms"] == pytest.approx(b.summary["token_gap_ms"], abs=1e-6)


# ---------------------------------------------------------------------------
# validation


def field_errors(exc: ValidationError) -> dict[str, str]:
    return {".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()}


def test_unknown_router_mode_is_a_clear_error(trace_path):
    with pytest.raises(ValidationError) as ei:
        dynosim.RunConfig(router_mode="fastest")
    errs = field_errors(ei.value)
    assert list(errs) == ["router_mode"]
    assert "unknown router mode 'fastest'" in errs["router_mode"] and "round-robin" in errs["router_mode"]
    with pytest.raises(ValidationError, match="router_mode"):
        dynosim.run(trace_path, router_mode="fastest")


def test_max_num_seqs_over_the_token_budget_is_rejected():
    with pytest.raises(ValidationError) as ei:
        dynosim.MockerArgs(max_num_seqs=512, max_num_batched_tokens=256)
    msg = str(ei.value)
    assert "max_num_seqs (512) exceeds max_num_batched_tokens (256)" in msg
    dynosim.MockerArgs(max_num_seqs=256, max_num_batched_tokens=256)  # equal is fine


@pytest.mark.parametrize("kwargs, field", [
    ({"workers": 0}, "workers"),
    ({"workers": -2}, "workers"),
    ({"trace_block_size": 0}, "trace_block_size"),
    ({"arrival_speedup": 0}, "arrival_speedup"),
    ({"engine": {"num_gpu_blocks": 0}}, "engine.num_gpu_blocks"),
    ({"engine": {"block_size": -64}}, "engine.block_size"),
    ({"engine": {"preemption_mode": "random"}}, "engine.preemption_mode"),
    ({"engine": {"blocksize": 64}}, "engine.blocksize"),
    ({"wrokers": 2}, "wrokers"),
])
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValidationError) as ei:
        dynosim.RunConfig(**kwargs)
    assert field in field_errors(ei.value)


def test_run_validates_keyword_arguments(trace_path):
    with pytest.raises(ValidationError) as ei:
        dynosim.run(trace_path, workers=0)
    assert "workers" in field_errors(ei.value)
    with pytest.raises(ValidationError) as ei:
        dynosim.run(trace_path, engine={"max_num_seqs": 9000})
    assert "max_num_batched_tokens" in str(ei.value)
    with pytest.raises(ValidationError) as ei:
        dynosim.run(trace_path, engine={"num_blocks": 10})
    assert "num_blocks" in field_errors(ei.value)


def test_config_is_frozen_engine_and_round_trips_through_json():
    cfg = dynosim.RunConfig(workers=2, engine={"block_size": 16, "num_gpu_blocks": 100})
    again = dynosim.RunConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and again.num_gpus == 2
    with pytest.raises(ValidationError):
        cfg.engine.block_size = 32  # MockerArgs is frozen
