"""Wire a virtual cluster (frontend, router policy, mocker workers) and run it."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from dynosim.clock import Clock
from dynosim.config import RunConfig
from dynosim.deploy.assembly import ROLE_OF_POOL, Deployment, Pool, WorkerSignals, build_deployment
from dynosim.deploy.frontend import Frontend
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.contract import Scheduler
from dynosim.engines.mocker.registry import scheduler_class
from dynosim.engines.mocker.timing import TimingModel, timing_for
from dynosim.metrics.collector import requests_frame, summarize
from dynosim.metrics.token_gaps import TokenGaps
from dynosim.request import Request
from dynosim.router.hashing import BlockHasher
from dynosim.router.router import Router
from dynosim.sim.clock import SimClock
from dynosim.sim.worker import Worker
from dynosim.traces.mooncake import Trace


@dataclass
class SimState:
    """Everything a finished simulation leaves behind (for metrics and invariant checks)."""

    config: RunConfig
    requests: list[Request]
    workers: list[Worker]
    gaps: TokenGaps
    wall_s: float
    extra: dict = field(default_factory=dict)


@dataclass
class Cluster:
    """A deployment wired with mocker workers, plus what the simulator keeps of its engines: the token gaps
    they record and, per pool name, their engine args and timing model (the planner's capacity view)."""

    deployment: Deployment
    gaps: TokenGaps
    engines: dict[str, MockerArgs]
    timings: dict[str, TimingModel]

    @property
    def frontend(self) -> Frontend:
        return self.deployment.frontend

    @property
    def router(self) -> Router:
        return self.deployment.router

    @property
    def pools(self) -> list[Pool]:
        return self.deployment.pools

    @property
    def workers(self) -> list[Worker]:
        """Every worker slot started at build time, pool after pool."""
        return self.deployment.workers


@dataclass(frozen=True)
class Parts:
    """The classes a simulation is built from; tests pass subclasses (a checked scheduler, a counting
    frontend) or a per-pass hook instead of patching modules."""

    worker: type[Worker] = Worker
    scheduler: type[Scheduler] | None = None      # None: the engine's own (MockerArgs.engine_type)
    frontend: type[Frontend] | None = None        # None: Frontend, or DisaggFrontend for a disaggregated config
    on_pass: Callable[[Worker, float, object], None] | None = None


def mocker_worker_factory(cfg: RunConfig, clock: Clock, gaps: TokenGaps, parts: Parts = Parts()):
    """``deploy.WorkerFactory`` of the simulator: mocker workers in ``clock``'s time, one timing model per pool.

    Returns ``(factory, engines, timings)``, the last two per pool name."""
    engines = cfg.pool_engines()
    timings = {pool: timing_for(args) for pool, args in engines.items()}

    def make(pool: str, wid: int, signals: WorkerSignals) -> Worker:
        args, timing = engines[pool], timings[pool]
        cls = parts.scheduler or scheduler_class(args.engine_type)

        def make_scheduler(sink):
            return cls(args, timing, sink=sink, role=ROLE_OF_POOL[pool], spec_seed=args.mtp_seed + wid)
        return parts.worker(wid, clock, make_scheduler, gaps, signals.on_first_token, signals.on_complete,
                            on_failed=signals.on_failed, fast_forward=cfg.fast_forward,
                            on_kv_events=signals.on_kv_events, on_pass=parts.on_pass,
                            admit_interval_ms=args.admit_interval_ms if pool != "decode" else 0.0,
                            client_latency_ms=args.client_latency_ms if pool != "prefill" else 0.0)

    return make, engines, timings


def mocker_metrics(engines: dict[str, MockerArgs]):
    """What a routing policy reads of a mocker worker: KV usage and requests waiting, from its scheduler."""
    def for_pool(pool: str, workers: list[Worker]):
        blocks = engines[pool].num_gpu_blocks

        def worker_metrics(wid: int) -> tuple[float, int]:
            sched = workers[wid].sched
            return sched.kv.num_active / blocks, len(sched.waiting)
        return worker_metrics
    return for_pool


def build_cluster(trace: Trace, cfg: RunConfig, clock: Clock, parts: Parts = Parts()) -> Cluster:
    """Wire ``cfg``'s deployment (``deploy.build_deployment``) with mocker workers on ``clock`` (virtual or wall
    time): frontend → router → workers, or frontend → prefill router → prefill → link → decode router → decode."""
    if trace.trace_block_size != cfg.trace_block_size:
        raise ValueError(f"trace was loaded with trace_block_size={trace.trace_block_size}, "
                         f"config says {cfg.trace_block_size}")
    gaps = TokenGaps()
    make, engines, timings = mocker_worker_factory(cfg, clock, gaps, parts)
    bs = engines["prefill" if cfg.disagg is not None else "workers"].block_size
    dep = build_deployment(cfg, clock, trace, BlockHasher(bs, cfg.trace_block_size), make,
                           worker_metrics=mocker_metrics(engines), frontend_cls=parts.frontend)
    return Cluster(dep, gaps, engines, timings)


def simulate(trace: Trace, cfg: RunConfig, *, timeline_points: int = 0, record_passes: bool = False,
             parts: Parts = Parts()) -> SimState:
    """Replay ``trace`` through ``cfg``'s deployment in virtual time, built from ``parts``.

    ``timeline_points`` > 0 samples the pools about that many times (``extra["timeline"]``, a
    ``TimelineSampler``); ``record_passes`` logs every pass per worker slot (``extra["passes"]``,
    for trace events). Neither changes any result.
    """
    t0 = time.perf_counter()
    clock = SimClock()
    cluster = build_cluster(trace, cfg, clock, parts)
    driver = None
    if cfg.planner is not None:
        from dynosim.sim.scaling import PlannerDriver

        driver = PlannerDriver(cfg, cluster, clock)
        driver.start()
    passes = _record_passes(cluster) if record_passes else None
    sampler = None
    if timeline_points > 0:
        from dynosim.metrics.timeline import TimelineSampler

        sampler = TimelineSampler.for_run(clock, cluster, trace, timeline_points,
                                          closed_loop=cfg.concurrency is not None, planner=driver)
        sampler.start()
    cluster.frontend.start()
    # The event loop allocates millions of short-lived, acyclic objects: reference counting
    # frees them, and pausing the cyclic collector saves its repeated full scans.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        clock.run()
    finally:
        if gc_was_enabled:
            gc.enable()
    extra = {"router": cluster.router}
    if sampler is not None:
        extra["timeline"] = sampler
    if passes is not None:
        extra["passes"] = passes
    workers = cluster.workers
    if driver is not None:
        extra["planner"] = driver
        workers = [w for p in cluster.pools for w in p.workers] + driver.retired
    return SimState(cfg, cluster.frontend.requests, workers, cluster.gaps, time.perf_counter() - t0, extra=extra)


def _record_passes(cluster: Cluster) -> dict[tuple[str, int], list]:
    """One pass log per (pool role, worker slot), shared by every engine the slot holds (planner restarts)."""
    logs: dict[tuple[str, int], list] = {}
    for h in cluster.pools:
        def track(w: Worker, role: str = h.role) -> Worker:
            w.pass_log = logs.setdefault((role, w.wid), [])
            return w
        for w in h.workers:
            track(w)
        h.new_worker = (lambda wid, make=h.new_worker, track=track: track(make(wid)))
    return logs


def summarize_state(state: SimState) -> tuple[pd.DataFrame, dict]:
    df = requests_frame(state.requests)
    gap_values, gap_counts = state.gaps.arrays()
    driver = state.extra.get("planner")
    gpu_seconds = None
    if driver is not None and len(df):
        done = df[df["status"] == "done"]
        start = float(df["arrival_ms"].min())
        end = float(done["last_token_ms"].max()) if len(done) else start
        gpu_seconds = driver.gpu_seconds(start, end)
    slo = state.config.slo
    summary = summarize(df, gap_values, gap_counts, state.config.num_gpus, gpu_seconds=gpu_seconds,
                        slo_ttft_ms=slo.ttft_ms, slo_itl_ms=slo.itl_ms, slo_e2e_ms=slo.e2e_ms,
                        preemptions=sum(w.sched.num_preemptions for w in state.workers))
    if driver is not None:
        summary["planner"] = driver.report()
    summary["hardware"] = hardware_summary(state.config)
    nextn = max(w.sched.nextn for w in state.workers) if state.workers else 0
    if nextn:
        drafted = sum(w.sched.drafted for w in state.workers)
        accepted = sum(w.sched.accepted for w in state.workers)
        summary["speculative"] = {"nextn": nextn, "drafted": drafted, "accepted": accepted,
                                  "acceptance": accepted / drafted if drafted else float("nan"),
                                  "tokens_per_step": 1 + nextn * accepted / drafted if drafted else float("nan")}
    return df, summary


def describe_worker(args: MockerArgs) -> dict:
    """What one worker of a pool is: hardware, memory, KV capacity and how its passes are priced."""
    from dynosim.engines.mocker.timing import timing_source

    out: dict = {"timing_source": timing_source(args), "gpus_per_worker": args.gpus_per_worker,
                 "kv_blocks_per_worker": args.num_gpu_blocks, "block_size": args.block_size,
                 "kv_tokens_per_worker": args.num_gpu_blocks * args.block_size,
                 "kv_blocks_source": args.kv_blocks_source}
    hw = args.hardware
    if hw is None:
        return {"model": None, "system": None, **out}
    from dynosim.hardware.memory import worker_memory

    mem = worker_memory(hw, args.block_size, args.max_num_batched_tokens, args.max_num_seqs)
    try:
        version = hw.version()
    except ValueError:  # roofline on a system without database data
        version = hw.backend_version
    return {"model": hw.model, "system": hw.system, "backend": hw.backend, "backend_version": version,
            "tp": hw.tp, "pp": hw.pp, "ep": hw.ep, "dp": hw.dp, "weight_quant": hw.weights_dtype,
            "kv_quant": hw.kv_dtype, "weights_gb_per_gpu": round(mem.weights_gb_per_gpu, 3),
            "kv_bytes_per_token": mem.kv_bytes_per_token, "kv_bytes_per_token_per_gpu": mem.kv_bytes_per_token_per_gpu,
            "memory_kv_blocks": mem.kv_blocks_per_worker, **out}


def hardware_summary(cfg: RunConfig) -> dict:
    """``summary["hardware"]``: one worker's description, or one per pool where the pools differ."""
    engines = cfg.pool_engines()
    desc = {pool: describe_worker(args) for pool, args in engines.items()}
    if len(desc) == 1 or desc["prefill"] == desc["decode"]:
        return next(iter(desc.values()))
    return desc
