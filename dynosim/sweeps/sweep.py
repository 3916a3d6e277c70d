"""A whole sweep: expand the spec, run what the store lacks, aggregate repeats, find and plot the frontier."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from dynosim.sweeps.pareto import aggregate, frontier, slo_filter
from dynosim.sweeps.plots import plot_pareto
from dynosim.sweeps.runner import execute
from dynosim.sweeps.spec import SweepSpec, expand
from dynosim.sweeps.store import ResultStore


@dataclass
class SweepResult:
    results: pd.DataFrame      # one row per point and seed
    points: pd.DataFrame       # one row per point (seeds aggregated: mean and _ci)
    frontier: pd.DataFrame     # Pareto-optimal points meeting the SLO filters
    out: Path
    ran: int                   # points simulated in this call (the rest came from the store)


def sweep(trace: str | Path, spec: SweepSpec, out: str | Path, *, executor: str = "local", jobs: int | None = None,
          limit: int | None = None, ray_address: str | None = None, ttft_p90: float | None = None,
          itl: float | None = None, e2e: float | None = None,
          progress: Callable[[int, int], None] = lambda done, total: None) -> SweepResult:
    """Run ``spec`` on ``trace`` into ``out`` (resuming what is there); writes results.parquet, points.csv,
    pareto.csv (tokens/s/GPU vs tokens/s/user), pareto_ttft.csv (tokens/s/GPU vs p90 TTFT) and pareto.png."""
    trace = str(Path(trace).resolve())
    if not Path(trace).exists():
        raise FileNotFoundError(f"trace not found: {trace}")
    store = ResultStore(out)
    (store.dir / "spec.yaml").write_text(yaml.safe_dump(json.loads(spec.model_dump_json()), sort_keys=False))
    points = expand(spec)
    todo = [p for p in points if p.id not in store]
    check_timings(todo)
    done = len(points) - len(todo)
    progress(done, len(points))

    def record(row: dict) -> None:
        nonlocal done
        store.append(row)
        done += 1
        progress(done, len(points))

    execute(todo, trace, executor=executor, jobs=jobs, limit=limit, ray_address=ray_address, on_result=record)
    results = store.frame([p.id for p in points])
    results.to_parquet(store.dir / "results.parquet", index=False)
    agg = aggregate(results)
    agg["meets_slo"] = slo_filter(agg, ttft_p90=ttft_p90, itl=itl, e2e=e2e)
    agg.to_csv(store.dir / "points.csv", index=False)
    front = frontier(agg[agg["meets_slo"]])
    front.to_csv(store.dir / "pareto.csv", index=False)
    ttft_front(agg[agg["meets_slo"]]).to_csv(store.dir / "pareto_ttft.csv", index=False)
    plot_pareto(agg[agg["meets_slo"]], front, store.dir / "pareto.png",
                title=f"{Path(trace).name}: {spec.gpu_budget} GPUs, {len(agg)} points")
    return SweepResult(results, agg, front, store.dir, len(todo))


def check_timings(points) -> None:
    """Build each distinct timing model of the points once, so a combination the database cannot price is one
    clear error before any point runs (not one per point, after the work)."""
    from dynosim.engines.mocker.timing import timing_for

    seen: set[str] = set()
    for p in points:
        for args in p.config.pool_engines().values():
            key = json.dumps([args.timing, args.timing_profile, args.nextn, args.timing_params,
                              args.hardware.model_dump(mode="json") if args.hardware else None], sort_keys=True)
            if key not in seen:
                seen.add(key)
                timing_for(args)


def ttft_front(points: pd.DataFrame) -> pd.DataFrame:
    """The TTFT-vs-throughput frontier: no other point has both more output tokens/s/GPU and a lower p90 TTFT."""
    if points.empty:
        return points
    f = frontier(points.assign(_neg_ttft=-points["ttft_p90"]), x="output_tps_per_gpu", y="_neg_ttft")
    return f.drop(columns="_neg_ttft")


def load_sweep(out: str | Path) -> pd.DataFrame:
    """A finished (or partial) sweep's per-seed results from its folder."""
    out = Path(out)
    if (out / "results.parquet").exists():
        return pd.read_parquet(out / "results.parquet")
    return ResultStore(out).frame()
