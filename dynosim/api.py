"""Python API: ``dynosim.run(...)`` does what ``dynosim run`` does and returns frames."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dynosim import __version__
from dynosim.config import RouterParams, RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.sim.simulation import simulate, summarize_state
from dynosim.traces.mooncake import Trace, load_trace


@dataclass
class RunResult:
    """Summary dict (aiperf/Dynamo definitions) plus one row per request."""

    summary: dict[str, Any]
    requests: pd.DataFrame
    config: RunConfig
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> pd.DataFrame:
        """The latency distributions as a tidy frame (metric × statistic)."""
        rows = {k: v for k, v in self.summary.items() if isinstance(v, dict) and "p50" in v}
        return pd.DataFrame(rows).T

    @property
    def replicas(self) -> pd.DataFrame | None:
        """The planner's replica timeline per pool (None for a static deployment)."""
        driver = self.extra.get("state").extra.get("planner") if self.extra.get("state") is not None else None
        return driver.timeline() if driver is not None else None

    @property
    def timeline(self) -> pd.DataFrame | None:
        """Per-worker and per-pool time series (schema: ``dynosim.metrics.timeline``); None when the run
        was made with ``timeline_points=0``."""
        state = self.extra.get("state")
        sampler = state.extra.get("timeline") if state is not None else None
        return sampler.frame() if sampler is not None else None

    def save(self, out_dir: str | Path) -> Path:
        """Write ``summary.json``, ``requests.parquet`` and ``requests.csv`` into ``out_dir``; with a timeline
        ``timeline.parquet`` and its plot ``timeline.png``; with a planner also ``replicas.csv``,
        ``replicas.parquet`` and the plot ``replicas.png``."""
        out = check_output_dir(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_OUTPUTS:      # an earlier run's files in this folder must not pass for this run's
            if (out / name).is_file():
                (out / name).unlink()
        (out / "summary.json").write_text(json.dumps(strict_json(self.summary), indent=2, sort_keys=True,
                                                     allow_nan=False) + "\n")
        self.requests.to_parquet(out / "requests.parquet", index=False)
        self.requests.to_csv(out / "requests.csv", index=False)
        timeline = self.timeline
        if timeline is not None:
            from dynosim.metrics.plots import plot_timeline

            timeline.to_parquet(out / "timeline.parquet", index=False)
            plot_timeline(timeline, out / "timeline.png", title=self._title())
        tl = self.replicas
        if tl is not None:
            from dynosim.metrics.plots import plot_replicas

            tl.to_csv(out / "replicas.csv", index=False)
            tl.to_parquet(out / "replicas.parquet", index=False)
            plot_replicas(tl, out / "replicas.png", end_s=self.summary["duration_s"]
                          + float(self.requests["arrival_ms"].min()) / 1000.0 if len(self.requests) else None)
        return out

    def _title(self) -> str:
        c = self.config
        d = c.disagg
        pools = f"{d.prefill_workers}P+{d.decode_workers}D" if d is not None else f"{c.workers} workers"
        return f"{Path(str(self.summary.get('run', {}).get('trace', ''))).name}: {pools}, router {c.router_mode}" \
            + (" (planner on)" if c.planner is not None else "")


RUN_OUTPUTS = ("summary.json", "requests.parquet", "requests.csv", "timeline.parquet", "timeline.png",
               "replicas.csv", "replicas.parquet", "replicas.png", "report.html")


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float as None, so it serialises as strict JSON (``null``, never ``NaN``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def check_output_dir(path: str | Path) -> Path:
    """``path`` can hold a run's outputs: a writable folder, or creatable under a writable one (ValueError), so
    a bad ``--out`` fails before the work, not after it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{p} exists and is not a directory")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"not writable: {probe}")
    return p


def check_output_file(path: str | Path) -> Path:
    """``path`` can be written: its folder exists and is writable, and it is not a folder (ValueError)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not a file")
    if not parent.is_dir():
        raise ValueError(f"directory not found: {parent}")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"not writable: {p if p.exists() else parent}")
    return p


def run(trace: str | Path | Trace, *, workers: int = 1, router_mode: str = "round-robin",
        engine: MockerArgs | dict | None = None, trace_block_size: int = 512, arrival_speedup: float = 1.0,
        seed: int = 0, limit: int | None = None, fast_forward: bool = True, router: RouterParams | dict | None = None,
        config: RunConfig | None = None, timeline_points: int = 300,
        trace_events: str | Path | None = None) -> RunResult:
    """Replay a Mooncake-style trace through a simulated deployment.

    Pass either the keyword arguments or a ready ``RunConfig``. ``engine`` takes
    ``MockerArgs`` or a dict of its fields (block_size, num_gpu_blocks, ...);
    ``router`` takes ``RouterParams`` or a dict (temperature, queue_threshold, ...).
    ``timeline_points``: about how many samples ``RunResult.timeline`` gets (0: none).
    ``trace_events``: write every pass there as Perfetto/Chrome trace-event JSON.
    Neither changes any simulated figure.
    """
    if isinstance(timeline_points, bool) or not isinstance(timeline_points, int) or timeline_points < 0:
        raise ValueError(f"timeline_points must be an integer >= 0, got {timeline_points!r}")
    if trace_events is not None:
        trace_events = check_output_file(trace_events)
    if config is None:
        if isinstance(engine, dict):
            engine = MockerArgs(**engine)
        if isinstance(router, dict):
            router = RouterParams(**router)
        config = RunConfig(workers=workers, router_mode=router_mode, engine=engine or MockerArgs(),
                           router=router or RouterParams(),
                           trace_block_size=trace_block_size, arrival_speedup=arrival_speedup, seed=seed,
                           fast_forward=fast_forward)
    t0 = time.perf_counter()
    if isinstance(trace, Trace):
        tr = trace
        if tr.speedup != config.arrival_speedup or tr.trace_block_size != config.trace_block_size:
            raise ValueError("the loaded trace's speedup/trace_block_size differ from the config")
    else:
        tr = load_trace(trace, trace_block_size=config.trace_block_size, speedup=config.arrival_speedup,
                        limit=limit)
    load_s = time.perf_counter() - t0
    state = simulate(tr, config, timeline_points=timeline_points, record_passes=trace_events is not None)
    df, summary = summarize_state(state)
    sim_s = summary["duration_s"]
    summary["run"] = {
        "dynosim_version": __version__,
        "trace": str(tr.path),
        "trace_notes": list(tr.notes),
        "config": json.loads(config.model_dump_json()),
        "seed": config.seed,
        "wall_s": load_s + state.wall_s,
        "load_s": load_s,
        "sim_wall_s": state.wall_s,
        "x_realtime": (sim_s / state.wall_s) if state.wall_s > 0 else float("nan"),
        "python": platform.python_version(),
    }
    extra: dict[str, Any] = {"state": state}
    if trace_events is not None:
        from dynosim.metrics.trace_events import write_trace_events

        t0 = float(df["arrival_ms"].min()) if len(df) else 0.0
        extra["trace_events"] = (trace_events, write_trace_events(state.extra["passes"], trace_events, t0))
    return RunResult(summary, df, config, extra=extra)
