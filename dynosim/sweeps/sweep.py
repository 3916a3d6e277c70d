"""A whole sweep: expand the spec, run what the store lacks, aggregate repeats, find and plot the frontier."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from dynosim.sweeps.pareto import aggregate, frontier
from dynosim.sweeps.plots import load_file, plot_cross_load, plot_load
from dynosim.sweeps.recommend import miss_text, recommend, where_text
from dynosim.sweeps.runner import execute
from dynosim.sweeps.spec import SweepSpec, expand, skipped_layouts
from dynosim.sweeps.store import ResultStore, input_manifest, sha256_file


@dataclass
class SweepResult:
    results: pd.DataFrame      # one row per point and seed
    points: pd.DataFrame       # one row per point (seeds aggregated: mean and _ci; meets_slo, missed)
    frontier: pd.DataFrame     # per load level, the Pareto-optimal points meeting the objectives
    recommendation: dict       # recommendation.json (schema dynosim.recommendation/1)
    out: Path
    ran: int                   # points simulated in this call (the rest came from the store)

    @property
    def feasible(self) -> bool:
        """Whether a deployment meets every objective at the target load."""
        return bool(self.recommendation["feasible"])


def sweep(trace: str | Path, spec: SweepSpec, out: str | Path, *, executor: str = "local", jobs: int | None = None,
          limit: int | None = None, ray_address: str | None = None, fresh: bool = False,
          progress: Callable[[int, int], None] = lambda done, total: None,
          note: Callable[[str], None] = lambda msg: None) -> SweepResult:
    """Run ``spec`` on ``trace`` into ``out`` (resuming what is there), judge every point by
    ``spec.objectives`` and write results.parquet, points.csv, recommendation.json, pareto.csv and
    pareto_ttft.csv (the frontiers per load), pareto.png (all loads) and pareto_<load>.png (one per load).

    ``out`` must hold results of the same inputs (trace content, limit, profiles; ``StoreError`` otherwise) or
    none; ``fresh`` clears it first. A point that raises stops the sweep (``PointError``) with what finished
    kept in the store."""
    trace = str(Path(trace).resolve())
    if not Path(trace).exists():
        raise FileNotFoundError(f"trace not found: {trace}")
    if not Path(trace).is_file():
        raise ValueError(f"trace {trace}: not a file")
    points = expand(spec)
    if not points:
        raise ValueError("no deployment of the grid can run: " + ("; ".join(skipped_layouts(spec)) or
                                                                   "the budget is too small for the modes asked"))
    # the trace is read (validated) before the folder is touched, the timings built before any point runs
    rate, notes = offered_rate(trace, spec.trace_block_size, limit, spec.concurrency == [])
    digest = sha256_file(trace)
    with ResultStore.open_for_sweep(out, input_manifest(trace, limit, points, digest), fresh=fresh) as store:
        if fresh:
            for old in (*store.dir.glob("pareto*.png"), *(store.dir / n for n in DERIVED)):
                old.unlink(missing_ok=True)
        if store.torn:
            note(f"dropped the torn last line of {store.path} (a point cut off by a kill); it runs again")
        (store.dir / "spec.yaml").write_text(yaml.safe_dump(json.loads(spec.model_dump_json()), sort_keys=False))
        todo = [p for p in points if p.id not in store]
        check_timings(todo)
        done = len(points) - len(todo)
        progress(done, len(points))

        def record(row: dict) -> None:
            nonlocal done
            store.append(row)
            done += 1
            progress(done, len(points))

        execute(todo, trace, executor=executor, jobs=jobs, limit=limit, ray_address=ray_address,
                trace_sha256=digest, on_result=record)
        return _finish(store, spec, points, trace, rate, notes, len(todo))


# what a sweep derives from results.jsonl (``fresh`` removes them with it, so nothing stale outlives the results)
DERIVED = ("results.parquet", "points.csv", "pareto.csv", "pareto_ttft.csv", "recommendation.json", "report.html")


def _finish(store: ResultStore, spec: SweepSpec, points, trace: str, rate: float | None, notes, ran: int
            ) -> SweepResult:
    """Aggregate, judge, recommend and plot the finished points."""
    results = store.frame([p.id for p in points])
    results.to_parquet(store.dir / "results.parquet", index=False)
    obj = spec.objectives
    agg = aggregate(results)
    agg["meets_slo"] = obj.meets(agg)
    agg["missed"] = [miss_text({"missed": [m.as_dict() for m in obj.misses(r)], "failed_requests":
                                int(r.get("failed", 0))}) if not ok else ""
                     for (_, r), ok in zip(agg.iterrows(), agg["meets_slo"])]
    agg.to_csv(store.dir / "points.csv", index=False)
    rec = recommend(agg, obj, gpu_budget=spec.gpu_budget, trace=trace, rate_rps=rate)
    rec["trace_notes"] = list(notes)
    (store.dir / "recommendation.json").write_text(json.dumps(rec, indent=2) + "\n")
    fronts, ttft_fronts = [], []
    for old in (*store.dir.glob("pareto_x*.png"), *store.dir.glob("pareto_c*.png")):
        old.unlink()                                   # a resumed sweep with other loads leaves no stale plot
    for load, at in agg.groupby("load", sort=True):
        ok = at["meets_slo"]
        fronts.append(frontier(at[ok]))
        ttft_fronts.append(ttft_front(at[ok]))
        kind = str(at["load_kind"].iloc[0])
        entry = next(x for x in rec["loads"] if x["load"] == float(load))
        plot_load(at, ok, obj, store.dir / load_file(float(load), kind),
                  title=f"{Path(trace).name} at {where_text(entry)}, {spec.gpu_budget} GPUs")
    front = pd.concat(fronts, ignore_index=True) if fronts else agg.iloc[:0]
    front.to_csv(store.dir / "pareto.csv", index=False)
    (pd.concat(ttft_fronts, ignore_index=True) if ttft_fronts else agg.iloc[:0]).to_csv(
        store.dir / "pareto_ttft.csv", index=False)
    plot_cross_load(agg, agg["meets_slo"], obj, store.dir / "pareto.png",
                    title=f"{Path(trace).name}, {spec.gpu_budget} GPUs")
    return SweepResult(results, agg, front, rec, store.dir, ran)


def offered_rate(trace: str, trace_block_size: int, limit: int | None, timed: bool = True
                 ) -> tuple[float | None, tuple[str, ...]]:
    """The trace's own arrival rate (requests per second over the span of its timestamps) at ×1 (None for a
    closed-loop sweep, ``timed`` False), and the notes loading it raised."""
    from dynosim.traces.mooncake import load_trace

    tr = load_trace(trace, trace_block_size=trace_block_size, limit=limit, require_timestamps=timed)
    if not timed:
        return None, tr.notes
    stamps = [t.row.timestamp_ms for s in tr.sessions for t in s.turns if t.row.timestamp_ms is not None]
    if len(stamps) < 2:
        stamps = [s.start_ms for s in tr.sessions]
    span_s = (max(stamps) - min(stamps)) / 1000.0 if stamps else 0.0
    return (tr.n_requests / span_s if span_s > 0 else None), tr.notes


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
