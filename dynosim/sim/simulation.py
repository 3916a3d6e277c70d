"""Wire a virtual cluster (frontend, router policy, mocker workers) and run it."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from dynosim.config import RunConfig
from dynosim.deploy.routers import aggregated_router
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.engines.mocker.timing import TimingModel, timing_for
from dynosim.metrics.collector import requests_frame, summarize
from dynosim.request import Request
from dynosim.router.hashing import BlockHasher
from dynosim.router.router import Router
from dynosim.clock import Clock
from dynosim.sim.clock import SimClock
from dynosim.deploy.frontend import Frontend
from dynosim.sim.worker import TokenGaps, Worker
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
class PoolHandle:
    """One pool of a wired deployment: what scaling needs to add, route to and retire its workers."""

    name: str                       # "workers" (aggregated), "prefill" or "decode"
    role: str                       # "aggregated", "prefill" or "decode"
    router: Router
    workers: list[Worker]           # every slot ever started, indexed by worker id (the frontend's list)
    new_worker: Callable[[int], Worker]
    args: MockerArgs
    timing: TimingModel


@dataclass
class Cluster:
    """A wired deployment on some clock: frontend, router, workers."""

    frontend: Frontend
    router: Router
    workers: list[Worker]
    gaps: TokenGaps
    pools: list[PoolHandle] = field(default_factory=list)


def build_cluster(trace: Trace, cfg: RunConfig, clock: Clock) -> Cluster:
    """Wire frontend → router → mocker workers on ``clock`` (virtual or wall time)."""
    if trace.trace_block_size != cfg.trace_block_size:
        raise ValueError(f"trace was loaded with trace_block_size={trace.trace_block_size}, "
                         f"config says {cfg.trace_block_size}")
    timing = timing_for(cfg.engine)
    workers: list[Worker] = []

    def worker_metrics(wid: int) -> tuple[float, int]:
        sched = workers[wid].sched
        return sched.kv.num_active / cfg.engine.num_gpu_blocks, len(sched.waiting)

    router = aggregated_router(cfg, worker_metrics)
    hasher = BlockHasher(cfg.engine.block_size, cfg.trace_block_size)
    gaps = TokenGaps()
    frontend_ref: list[Frontend] = []

    def first_token(req: Request) -> None:
        frontend_ref[0].on_first_token(req)

    def complete(req: Request) -> None:
        frontend_ref[0].on_complete(req)

    def failed(req: Request) -> None:
        frontend_ref[0].on_failed(req)

    def kv_events(wid: int, events: list) -> None:
        for kind, hashes, parent in events:
            router.on_kv_event(wid, kind, hashes, parent)

    def new_worker(wid: int) -> Worker:
        worker = Worker(wid, clock, None, gaps, first_token, complete, on_failed=failed,
                        fast_forward=cfg.fast_forward, on_kv_events=kv_events if router.wants_kv_events else None,
                        admit_interval_ms=cfg.engine.admit_interval_ms,
                        client_latency_ms=cfg.engine.client_latency_ms)
        worker.sched = VllmScheduler(cfg.engine, timing,
                                     sink=worker.record_kv_event if router.wants_kv_events else None,
                                     spec_seed=cfg.engine.mtp_seed + wid)
        return worker

    workers.extend(new_worker(wid) for wid in range(cfg.workers))
    frontend = Frontend(clock, trace, hasher, router, workers, cfg.engine.num_gpu_blocks, cfg.concurrency)
    frontend_ref.append(frontend)
    pool = PoolHandle("workers", "aggregated", router, workers, new_worker, cfg.engine, timing)
    return Cluster(frontend, router, workers, gaps, [pool])


def simulate(trace: Trace, cfg: RunConfig, *, timeline_points: int = 0, record_passes: bool = False) -> SimState:
    """Replay ``trace`` through ``cfg``'s deployment in virtual time.

    ``timeline_points`` > 0 samples the pools about that many times (``extra["timeline"]``, a
    ``TimelineSampler``); ``record_passes`` logs every pass per worker slot (``extra["passes"]``,
    for trace events). Neither changes any result.
    """
    t0 = time.perf_counter()
    clock = SimClock()
    if cfg.disagg is not None:
        from dynosim.sim.disagg import build_disagg_cluster

        cluster = build_disagg_cluster(trace, cfg, clock)
    else:
        cluster = build_cluster(trace, cfg, clock)
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
                        slo_ttft_ms=slo.ttft_ms, slo_itl_ms=slo.itl_ms, slo_e2e_ms=slo.e2e_ms)
    if driver is not None:
        summary["planner"] = driver.report()
    summary["preemptions"] = sum(w.sched.num_preemptions for w in state.workers)
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
