"""Assemble a deployment from a ``RunConfig``: pools, routers, frontend and KV-event plumbing.

``build_deployment(cfg, clock, trace, hasher, worker_factory)`` is the one place a deployment is
put together, for the simulator (mocker workers on its SimClock) and for a wall-clock run alike.
The worker factory and the clock are parameters (constructor injection): the frontend exists
before its workers, so every worker is built with its signals bound (``WorkerSignals``), and
workers added later (the planner) come from the same ``Pool.new_worker``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from dynosim.clock import Clock
from dynosim.config import RunConfig
from dynosim.deploy.frontend import DisaggFrontend, Frontend, Hasher
from dynosim.deploy.routers import WorkerMetrics, aggregated_router, decode_router, prefill_router
from dynosim.disagg.transfer import LinkState
from dynosim.request import Request
from dynosim.router.kv_event import KvEvent
from dynosim.router.router import Router
from dynosim.traces.mooncake import Trace

# each pool's name and the role its workers play in it
ROLE_OF_POOL = {"workers": "aggregated", "prefill": "prefill", "decode": "decode"}

KvEventSink = Callable[[int, list[KvEvent]], None]   # (worker id, the events of one pass) -> None


@dataclass(frozen=True)
class WorkerSignals:
    """What a worker calls back: its pool's frontend entry points and, when its pool's router indexes
    KV events, where to publish them (``None`` otherwise)."""

    on_first_token: Callable[[Request], None]
    on_complete: Callable[[Request], None]
    on_failed: Callable[[Request], None]
    on_kv_events: KvEventSink | None


class WorkerFactory(Protocol):
    def __call__(self, pool: str, wid: int, signals: WorkerSignals) -> Any:
        """A ready worker (anything with ``submit(req)``) of ``pool`` ("workers", "prefill", "decode")."""
        ...


@dataclass
class Pool:
    """One pool of a deployment: its router, every worker slot ever started (indexed by id) and how to
    start another."""

    name: str                 # "workers" (aggregated), "prefill" or "decode"
    role: str                 # "aggregated", "prefill" or "decode"
    router: Router
    workers: list
    new_worker: Callable[[int], Any]


@dataclass
class Deployment:
    frontend: Frontend
    router: Router            # the router new requests meet (aggregated, or prefill)
    pools: list[Pool]
    link: LinkState | None = None

    @property
    def workers(self) -> list:
        return [w for p in self.pools for w in p.workers]


def kv_event_sink(router: Router) -> KvEventSink | None:
    """Where a pool's workers publish KV events: its router's indexer (None when it indexes none)."""
    if not router.wants_kv_events:
        return None

    def kv_events(wid: int, events: list[KvEvent]) -> None:
        for event in events:
            router.on_kv_event(wid, event)
    return kv_events


def build_deployment(cfg: RunConfig, clock: Clock, trace: Trace, hasher: Hasher, worker_factory: WorkerFactory, *,
                     worker_metrics: Callable[[str, Sequence], WorkerMetrics | None] | None = None,
                     frontend_cls: type[Frontend] | None = None, link: LinkState | None = None) -> Deployment:
    """Wire ``cfg``'s deployment on ``clock``: frontend → router(s) → workers from ``worker_factory``.

    ``worker_metrics(pool, workers)``: what a policy reads of a pool's workers (the list fills as
    workers start). ``frontend_cls``: a ``Frontend`` (aggregated) or ``DisaggFrontend`` subclass.
    ``link``: the KV hand-off between the pools (default: ``cfg.disagg.transfer``'s modelled link; a
    live run, whose decode request pulls the KV itself, passes one that takes no time).
    """
    metrics = worker_metrics or (lambda pool, workers: None)
    engines = cfg.pool_engines()
    if cfg.disagg is None:
        workers: list = []
        router = aggregated_router(cfg, metrics("workers", workers))
        frontend = (frontend_cls or Frontend)(clock, trace, hasher, router, workers, cfg.engine.num_gpu_blocks,
                                              cfg.concurrency)
        signals = WorkerSignals(frontend.on_first_token, frontend.on_complete, frontend.on_failed,
                                kv_event_sink(router))

        def new_worker(wid: int):
            return worker_factory("workers", wid, signals)

        workers.extend(new_worker(wid) for wid in range(cfg.workers))
        return Deployment(frontend, router, [Pool("workers", ROLE_OF_POOL["workers"], router, workers, new_worker)])

    d = cfg.disagg
    pre_args, dec_args = engines["prefill"], engines["decode"]
    prefill: list = []
    decode: list = []
    p_router = prefill_router(cfg, metrics("prefill", prefill))
    d_router = decode_router(cfg, metrics("decode", decode))
    if link is None:
        link = LinkState(d.transfer.resolve(pre_args.hardware, dec_args.hardware, cfg.num_gpus))
    frontend = (frontend_cls or DisaggFrontend)(clock, trace, hasher, p_router, prefill, d_router, decode,
                                                min(pre_args.num_gpu_blocks, dec_args.num_gpu_blocks), link,
                                                cfg.concurrency)
    pre_signals = WorkerSignals(frontend.on_prefill_first_token, frontend.on_prefill_complete,
                                frontend.on_prefill_failed, kv_event_sink(p_router))
    dec_signals = WorkerSignals(frontend.on_first_token, frontend.on_complete, frontend.on_failed, None)

    def new_prefill(wid: int):
        return worker_factory("prefill", wid, pre_signals)

    def new_decode(wid: int):
        return worker_factory("decode", wid, dec_signals)

    prefill.extend(new_prefill(wid) for wid in range(d.prefill_workers))
    decode.extend(new_decode(wid) for wid in range(d.decode_workers))
    pools = [Pool("prefill", ROLE_OF_POOL["prefill"], p_router, prefill, new_prefill),
             Pool("decode", ROLE_OF_POOL["decode"], d_router, decode, new_decode)]
    return Deployment(frontend, p_router, pools, link)
