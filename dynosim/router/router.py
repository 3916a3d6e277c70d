"""The router: a policy plus the state it routes on (indexer, in-flight load, queue).

Takes requests and lifecycle signals with times, returns worker ids; imports
no simpy and no aiohttp, so the simulator (virtual time) and ``validate``
(wall time) drive the very same object.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from dynosim.request import Request, RequestStatus
from dynosim.router.active_load import ActiveLoad
from dynosim.router.context import RoutingContext
from dynosim.router.indexer import ApproxIndexer, KvIndexer
from dynosim.router.kv_event import KvEvent
from dynosim.router.policies import make_policy
from dynosim.router.policies.base import RoutingPolicy
from dynosim.router.queue import RouterQueue


class Router:
    def __init__(self, mode: str, n_workers: int, block_size: int, *, seed: int = 0,
                 kv_events: bool = True, ttl_s: float = 120.0, max_tree_size: int = 1 << 20,
                 queue_threshold: float | None = None, queue_policy: str = "fcfs",
                 max_num_batched_tokens: int = 8192, policy: RoutingPolicy | None = None,
                 worker_metrics: Callable[[int], tuple[float, int]] | None = None,
                 **policy_params: object):
        if n_workers <= 0:
            raise ValueError("a router needs at least one worker")
        self.policy = policy if policy is not None else make_policy(mode, seed=seed, **policy_params)
        self.block_size = block_size
        self.workers: list[int] = list(range(n_workers))
        self.rng = random.Random(seed)
        self.load = ActiveLoad(n_workers)
        self.track_load = self.policy.uses_load or queue_threshold is not None
        self.indexer: KvIndexer | ApproxIndexer | None = None
        if self.policy.uses_overlap:
            self.indexer = KvIndexer(n_workers) if kv_events else \
                ApproxIndexer(n_workers, ttl_ms=ttl_s * 1000.0, max_blocks=max_tree_size)
        self.queue = RouterQueue(queue_policy) if queue_threshold is not None else None
        if queue_threshold is not None and queue_threshold < 0:
            raise ValueError("router queue threshold must be >= 0")
        self._busy_tokens = (queue_threshold or 0.0) * max_num_batched_tokens
        self.decisions = 0
        self.worker_metrics = worker_metrics

    # -- what the engines feed back -------------------------------------------------
    @property
    def wants_kv_events(self) -> bool:
        """True when the indexer is fed by engine KV events (``on_kv_event``)."""
        return isinstance(self.indexer, KvIndexer)

    def on_kv_event(self, worker: int, event: KvEvent) -> None:
        """One KV event of ``worker``'s engine (simulated or live); ignored unless ``wants_kv_events``."""
        if isinstance(self.indexer, KvIndexer):
            self.indexer.apply(worker, event)

    # -- routing ------------------------------------------------------------------------
    def _overlap(self, now: float):
        idx = self.indexer
        if idx is None:
            return None
        if isinstance(idx, KvIndexer):
            return lambda req: idx.depths(req.seq_hashes)
        return lambda req: idx.depths_at(req.seq_hashes, now)

    def _context(self, now: float) -> RoutingContext:
        idx = self.indexer
        return RoutingContext(self.workers, self.load, now, self.block_size, self.rng, self._overlap(now),
                              idx.tree_sizes if idx is not None else (), self.worker_metrics)

    def all_busy(self) -> bool:
        busy = self._busy_tokens
        A = self.load.prefill_tokens
        return all(A[w] > busy for w in self.workers)

    def route(self, req: Request, now: float) -> int | None:
        """Pick a worker now, or park the request in the queue (returns None)."""
        if self.queue is not None and self.all_busy():
            uncached = req.isl
            if self.queue.policy == "wspt" and self.indexer is not None:
                best = max(self._context(now).overlap(req), default=0)
                uncached = max(0, req.isl - best * self.block_size)
            self.queue.push(req, now, uncached)
            req.status = RequestStatus.QUEUED
            return None
        return self._assign(req, now)

    def _assign(self, req: Request, now: float) -> int:
        ctx = self._context(now)
        w = self.policy.select(req, ctx)
        ov = ctx.overlap(req)[w] if self.indexer is not None else 0
        if self.track_load:
            self.load.add(req.rid, w, req.seq_hashes, max(0, req.isl - self.block_size * ov))
        if isinstance(self.indexer, ApproxIndexer):
            self.indexer.record(w, req.seq_hashes, now)
        req.worker = w
        req.routed = now
        req.router_overlap = ov
        self.decisions += 1
        return w

    def _drain(self, now: float) -> list[tuple[Request, int]]:
        if self.queue is None or not len(self.queue):
            return []
        out = []
        while len(self.queue) and not self.all_busy():
            req = self.queue.pop()
            out.append((req, self._assign(req, now)))
        return out

    # -- request lifecycle -----------------------------------------------------------
    def on_first_token(self, req: Request, now: float) -> list[tuple[Request, int]]:
        """Prefill done: its load leaves the worker; returns queued requests now routed."""
        if self.track_load:
            self.load.prefill_done(req.rid)
        self.policy.on_first_token(req, now)
        return self._drain(now)

    def on_complete(self, req: Request, now: float) -> list[tuple[Request, int]]:
        """Completion or failure: the request's blocks leave the worker's active set."""
        if self.track_load:
            self.load.free(req.rid)
        self.policy.on_complete(req, now)
        return self._drain(now)

    def set_workers(self, workers: Sequence[int]) -> None:
        """Restrict routing to these worker ids (scaling adds/removes candidates)."""
        if not workers:
            raise ValueError("a router needs at least one routable worker")
        self.workers = list(workers)

    def add_worker(self) -> int:
        """A new worker slot (not yet routable: ``set_workers`` makes it a candidate)."""
        w = self.load.add_worker()
        if self.indexer is not None and self.indexer.add_worker() != w:  # pragma: no cover - kept in step
            raise RuntimeError("router state out of step: indexer and load disagree on worker ids")
        return w

    def forget_worker(self, worker: int) -> None:
        """A worker was shut down: whatever the indexer knew of its cache is gone."""
        if self.indexer is not None:
            self.indexer.remove_worker(worker)
