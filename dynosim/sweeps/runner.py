"""Run sweep points: serially, on a local process pool, or on a Ray cluster; results stream into the store."""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from functools import lru_cache
from typing import Any, Callable, Iterable

from dynosim.sweeps.spec import SweepPoint

EXECUTORS = ("local", "serial", "ray")


@lru_cache(maxsize=4)
def _trace(path: str, trace_block_size: int, speedup: float, limit: int | None):
    from dynosim.traces.mooncake import load_trace

    return load_trace(path, trace_block_size=trace_block_size, speedup=speedup, limit=limit)


METRIC_NAMES = ("output_tps_per_gpu", "output_tps", "requests_per_s", "tps_user_mean", "tps_user_p50", "ttft_p50",
                "ttft_p90", "ttft_p99", "ttft_mean", "itl_mean", "itl_p50", "itl_p90", "e2e_p50", "e2e_p90",
                "goodput_rps", "slo_attainment", "prefix_reuse", "preemptions", "completed", "failed", "num_gpus",
                "duration_s")


def metrics_row(summary: dict) -> dict[str, Any]:
    """The figures a sweep compares, flat (one column each)."""
    th, g = summary["throughput"], summary["goodput"]
    return {
        "output_tps_per_gpu": th["output_tokens_per_s_per_gpu"],
        "output_tps": th["output_tokens_per_s"],
        "requests_per_s": th["requests_per_s"],
        "tps_user_mean": summary["tps_user"]["mean"],
        "tps_user_p50": summary["tps_user"]["p50"],
        "ttft_p50": summary["ttft_ms"]["p50"], "ttft_p90": summary["ttft_ms"]["p90"],
        "ttft_p99": summary["ttft_ms"]["p99"], "ttft_mean": summary["ttft_ms"]["mean"],
        "itl_mean": summary["itl_ms"]["mean"], "itl_p50": summary["itl_ms"]["p50"],
        "itl_p90": summary["itl_ms"]["p90"],
        "e2e_p50": summary["e2e_ms"]["p50"], "e2e_p90": summary["e2e_ms"]["p90"],
        "goodput_rps": g["requests_per_s"], "slo_attainment": g["attainment"],
        "prefix_reuse": summary["prefix_reuse_ratio"], "preemptions": summary["preemptions"],
        "completed": summary["requests"]["completed"], "failed": summary["requests"]["failed"],
        "num_gpus": summary["num_gpus"], "duration_s": summary["duration_s"],
    }


def run_point(point: SweepPoint, trace_path: str, limit: int | None = None) -> dict[str, Any]:
    """Simulate one point; a row of labels and metrics (``wall_s`` is the only non-deterministic field)."""
    from dynosim.sim.simulation import simulate, summarize_state

    t0 = time.perf_counter()
    cfg = point.config
    trace = _trace(trace_path, cfg.trace_block_size, cfg.arrival_speedup, limit)
    if point.resample_fraction is not None:
        trace = trace.resample(point.resample_fraction, cfg.seed)
    _, summary = summarize_state(simulate(trace, cfg))
    return {"id": point.id, **point.labels, **metrics_row(summary), "wall_s": time.perf_counter() - t0}


def _ray_run_point(point, trace_path, limit):  # pragma: no cover - executed inside Ray workers
    return run_point(point, trace_path, limit)


def execute(points: Iterable[SweepPoint], trace_path: str, *, executor: str = "local", jobs: int | None = None,
            limit: int | None = None, ray_address: str | None = None,
            on_result: Callable[[dict[str, Any]], None] = lambda r: None) -> None:
    """Run ``points``, calling ``on_result`` in the parent as each finishes (any order)."""
    points = list(points)
    if not points:
        return
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {list(EXECUTORS)}")
    if executor == "serial" or (executor == "local" and (jobs or os.cpu_count() or 1) == 1):
        for p in points:
            on_result(run_point(p, trace_path, limit))
        return
    if executor == "ray":
        _execute_ray(points, trace_path, limit, ray_address, jobs, on_result)
        return
    n = min(jobs or os.cpu_count() or 1, len(points))
    with ProcessPoolExecutor(max_workers=n) as pool:
        pending = {pool.submit(run_point, p, trace_path, limit) for p in points[:2 * n]}
        queue = points[2 * n:]
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(fut.result())
                if queue:
                    pending.add(pool.submit(run_point, queue.pop(0), trace_path, limit))


def _execute_ray(points, trace_path, limit, address, jobs, on_result) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=jobs if address is None else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(_ray_run_point)
        refs = [remote.remote(p, trace_path, limit) for p in points]
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            for r in done:
                on_result(ray.get(r))
    finally:
        if started:
            ray.shutdown()
