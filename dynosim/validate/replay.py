"""Replay a trace on the wall clock against live engines: the simulator's deployment, live workers.

``LiveReplay`` builds ``cfg``'s deployment with ``deploy.build_deployment``, the very call the
simulator makes: the same ``Frontend`` (arrivals, session turns) or ``DisaggFrontend`` (prefill
router → prefill → decode router → decode) and the same routers, on a ``WallClock``; only the
workers differ (``validate.live_workers``: they stream the request's token-id prompt to a live
server instead of simulating it). Prompts come from the trace's ``hash_ids``
(``validate.prompts``), so shared hash prefixes are shared token prefixes in the engine, and the
router hashes those very tokens (the KV events a live engine publishes carry the same tokens, so
its indexer and the engine agree).

Nothing is lost: a request that errors, times out (whole request, or a
stream silent for ``idle_timeout_s``), or returns a token count other than
the trace's is recorded as failed with the reason; when a server dies (or
stops answering ``/health``) or ``abort()`` is called (Ctrl-C) the run ends at
once, in-flight requests are marked failed, and the rows never sent are
counted. ``heartbeat(state)`` is called every ``heartbeat_every_s`` with the
requests finished, failed, in flight and not sent yet, so a caller can say
what the run is waiting for. What the run leaves behind is a ``LiveRun``
(``validate.live_run``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiohttp

from dynosim.clock import WallClock
from dynosim.config import RunConfig
from dynosim.deploy.assembly import Deployment, WorkerSignals, build_deployment
from dynosim.deploy.frontend import Frontend
from dynosim.engines.live.client import LiveClient
from dynosim.engines.live.metrics import MetricsError, delta, scrape
from dynosim.request import Request
from dynosim.traces.mooncake import Trace
from dynosim.validate.live_run import LiveRun
from dynosim.validate.live_workers import WORKER_OF_POOL, LiveLedger, LiveWorker, instant_link, warm_up_handoffs
from dynosim.validate.prompts import PromptHasher

__all__ = ["LiveReplay"]


class LiveReplay:
    """Drive ``trace`` through live endpoints as ``cfg``'s deployment, on the wall clock.

    ``urls``: the aggregated pool's endpoints (``cfg.workers`` of them), or with ``cfg.disagg`` the
    prefill pool's, and ``decode_urls`` the decode pool's. ``kv_listeners``: factories
    ``(worker, on_event) -> listener`` (objects with async ``start``/``stop`` and ``stats``), one per
    worker of the pool whose router indexes KV events. ``servers``: launched processes to watch; a
    dead one ends the run. ``health_every_s`` polls ``/health`` of attached endpoints too:
    ``health_failures`` misses in a row end the run. ``frontend_cls``: the frontend class to build
    (as the simulator's ``Parts.frontend``), default ``Frontend`` or ``DisaggFrontend``.
    """

    def __init__(self, trace: Trace, cfg: RunConfig, urls: list[str], model: str, *, vocab_size: int = 2048,
                 token_low: int = 4, token_high: int | None = None, prompt_seed: int = 0,
                 request_timeout_s: float = 600.0, idle_timeout_s: float | None = 60.0,
                 connect_timeout_s: float = 10.0, kv_listeners: list[Callable] | None = None,
                 servers: list | None = None, health_every_s: float = 2.0, health_failures: int = 3,
                 progress: Callable[[int, int, int], None] | None = None,
                 heartbeat: Callable[[dict], None] | None = None, heartbeat_every_s: float = 1.0,
                 decode_urls: list[str] | None = None, warmup_attempts: int = 3, warmup_retry_s: float = 2.0,
                 kv_connect_timeout_s: float = 10.0, frontend_cls: type[Frontend] | None = None):
        decode_urls = list(decode_urls or [])
        d = cfg.disagg
        if d is None and decode_urls:
            raise ValueError(f"{len(decode_urls)} decode endpoint(s) were given but the deployment has no decode "
                             "pool (no disagg section)")
        if d is None and len(urls) != cfg.workers:
            raise ValueError(f"the deployment has {cfg.workers} worker(s) but {len(urls)} endpoint(s) were given")
        if d is not None and (len(urls), len(decode_urls)) != (d.prefill_workers, d.decode_workers):
            raise ValueError(f"the deployment has {d.prefill_workers} prefill and {d.decode_workers} decode "
                             f"worker(s) but {len(urls)} prefill and {len(decode_urls)} decode endpoint(s) were given")
        self.trace = trace
        self.cfg = cfg
        self.urls = list(urls)
        self.decode_urls = decode_urls
        self.all_urls = self.urls + self.decode_urls
        self.pool_urls = {"workers": self.urls} if d is None else {"prefill": self.urls, "decode": self.decode_urls}
        self.model = model
        self.request_timeout_s = request_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat = heartbeat
        self.heartbeat_every_s = heartbeat_every_s
        block_size = cfg.pool_engines()["workers" if d is None else "prefill"].block_size
        self.hasher = PromptHasher(block_size, cfg.trace_block_size, vocab_size=vocab_size,
                                   low=token_low, high=token_high, seed=prompt_seed)
        self.kv_listener_factories = kv_listeners
        self.servers = servers or []
        self.health_every_s = health_every_s
        self.health_failures = health_failures
        self.progress = progress
        self._inflight: dict[asyncio.Task, Request] = {}
        self._aborted: str | None = None
        self._abort_event: asyncio.Event | None = None
        self._worker_state = {pool: [(0.0, 0)] * len(u) for pool, u in self.pool_urls.items()}
        self.kv_connect_timeout_s = kv_connect_timeout_s
        self.warmup_attempts = warmup_attempts
        self.warmup_retry_s = warmup_retry_s
        self.warmup: dict = {}
        self.ledger: LiveLedger | None = None
        self.deployment: Deployment | None = None
        self.frontend_cls = frontend_cls    # a Frontend / DisaggFrontend subclass (tests observe through it)

    # -- wiring ---------------------------------------------------------------------
    def _build(self, session: aiohttp.ClientSession) -> Deployment:
        """``cfg``'s deployment (``deploy.build_deployment``) with live workers, on this run's wall clock."""
        timeouts = dict(timeout_s=self.request_timeout_s, idle_timeout_s=self.idle_timeout_s,
                        connect_timeout_s=self.connect_timeout_s, session=session)

        def make(pool: str, wid: int, signals: WorkerSignals) -> LiveWorker:
            url = self.pool_urls[pool][wid]
            return WORKER_OF_POOL[pool](pool, wid, url, LiveClient(url, self.model, **timeouts), signals,
                                        self.ledger, self._launch)

        def metrics(pool: str, workers: list):
            state = self._worker_state[pool]
            return lambda w: state[w]
        return build_deployment(self.cfg, self.clock, self.trace, self.hasher, make, worker_metrics=metrics,
                                frontend_cls=self.frontend_cls,
                                link=None if self.cfg.disagg is None else instant_link())

    def _fail(self, req: Request, reason: str) -> None:
        """Fail ``req`` and, when it is a prefill twin, the trace's request it stands for."""
        req.fail(reason)
        original = self.frontend.requests[req.rid]
        if original is not req:
            original.fail(reason)

    def _launch(self, worker: LiveWorker, req: Request) -> None:
        if self._aborted is not None:
            self._fail(req, f"not sent, run aborted ({self._aborted.splitlines()[0]})")
            return
        task = asyncio.get_running_loop().create_task(self._serve(worker, req))
        self._inflight[task] = req

    async def _serve(self, worker: LiveWorker, req: Request) -> None:
        try:
            await worker.serve(req)
        except asyncio.CancelledError:
            self._fail(req, f"in flight when the run was aborted ({(self._aborted or 'cancelled').splitlines()[0]})")
            raise

    async def _drive(self) -> None:
        """Start the clock and the frontend; return when every request has ended or the run was aborted."""
        self.clock.start()
        self.frontend.start()
        abort_wait = asyncio.create_task(self._abort_event.wait())
        while True:
            await self.clock.run()
            if self._aborted is not None or not self._inflight:
                break
            done, _ = await asyncio.wait([*self._inflight, abort_wait], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self._inflight.pop(task, None)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
            self._inflight.clear()
        abort_wait.cancel()

    def abort(self, reason: str) -> None:
        """End the run now: no new requests, in-flight ones are cancelled and reported."""
        if self._aborted is None:
            self._aborted = reason
            if getattr(self, "clock", None) is not None:
                self.clock.cancel_all()
            for task in list(self._inflight):
                task.cancel()
            if self._abort_event is not None:
                self._abort_event.set()

    async def _watchdog(self, session: aiohttp.ClientSession) -> None:
        misses = [0] * len(self.all_urls)
        while self._aborted is None:
            for sp in self.servers:
                if not sp.alive():
                    self.abort(f"server died: {sp.death_message()}")
                    return
            for w, url in enumerate(self.all_urls):
                try:
                    async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        ok = r.status == 200
                except (aiohttp.ClientError, OSError, TimeoutError):
                    ok = False
                misses[w] = 0 if ok else misses[w] + 1
                if misses[w] >= self.health_failures:
                    self.abort(f"{url}/health failed {misses[w]} times in a row")
                    return
            await asyncio.sleep(self.health_every_s)

    async def _poll_worker_state(self, session: aiohttp.ClientSession) -> None:
        """Engine KV usage and queue length per pool, for policies that read them (Thompson, device-aware)."""
        while self._aborted is None:
            for pool, urls in self.pool_urls.items():
                for w, url in enumerate(urls):
                    try:
                        m = await scrape(url, session=session, timeout_s=5)
                        self._worker_state[pool][w] = (m.get("kv_cache_usage", 0.0), int(m.get("waiting", 0)))
                    except MetricsError:
                        pass
            await asyncio.sleep(1.0)

    def state(self) -> dict:
        """Where the run stands: requests finished (and failed), in flight, not sent yet, the oldest in flight."""
        now = self.clock.wall_ms()
        flying = [req for task, req in self._inflight.items() if not task.done()]
        oldest = max((now - req.arrival for req in flying), default=0.0)
        n = len(flying) + getattr(self.frontend, "transfers_in_flight", 0)   # + hand-offs between the pools
        led = self.ledger
        return {"elapsed_s": now / 1000.0, "done": led.done, "failed": led.failed, "inflight": n,
                "not_sent": max(0, self.trace.n_requests - led.done - n),
                "oldest_inflight_s": max(0.0, oldest) / 1000.0}

    async def _beat(self) -> None:
        while self._aborted is None:
            await asyncio.sleep(self.heartbeat_every_s)
            if self._aborted is None:
                self.heartbeat(self.state())

    async def _scrape_all(self, session: aiohttp.ClientSession) -> list[dict[str, float]]:
        out = []
        for url in self.all_urls:
            try:
                out.append(await scrape(url, session=session, timeout_s=10))
            except MetricsError:
                out.append({})
        return out

    # -- the run ---------------------------------------------------------------------
    async def run(self) -> LiveRun:
        self.clock = WallClock(1.0)
        self.hasher.prepare(self.trace)
        self._abort_event = asyncio.Event()
        self.ledger = led = LiveLedger(self.clock, self.hasher, self.progress, self.trace.n_requests)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            self.deployment = dep = self._build(session)
            self.frontend, self.router = dep.frontend, dep.router
            led.requests = self.frontend.requests
            pools = {p.name: p for p in dep.pools}
            listeners = []
            if self.router.wants_kv_events:   # the aggregated, or the prefill, pool's router
                if not self.kv_listener_factories or len(self.kv_listener_factories) != len(self.urls):
                    raise ValueError("the router indexes KV events: give one KV event endpoint per worker "
                                     "(--kv-events), or use --no-router-kv-events")
                listeners = [make(w, self.router.on_kv_event) for w, make in enumerate(self.kv_listener_factories)]
                for lst in listeners:
                    await lst.start()
                # an engine's first events are lost unless it has connected before its first request
                connected = await asyncio.gather(*(lst.wait_connected(self.kv_connect_timeout_s)
                                                   for lst in listeners))
                for lst, ok in zip(listeners, connected):
                    lst.stats.publisher_connected = ok
            if "decode" in pools:
                problem, self.warmup = await warm_up_handoffs(pools["prefill"].workers, pools["decode"].workers,
                                                              self.hasher, self.hasher.block_size,
                                                              self.warmup_attempts, self.warmup_retry_s)
                if problem is not None:
                    self.abort(problem)
            before = await self._scrape_all(session)
            aux = [asyncio.create_task(self._watchdog(session)),
                   asyncio.create_task(self._poll_worker_state(session))]
            if self.heartbeat is not None:
                aux.append(asyncio.create_task(self._beat()))
            t0 = time.perf_counter()
            try:
                if self._aborted is None:  # a failed warm-up ends the run before its clock starts
                    await self._drive()
            finally:
                wall = time.perf_counter() - t0
                for task in aux:
                    task.cancel()
                await asyncio.gather(*aux, return_exceptions=True)
            if self._aborted is not None:
                # prefilled and on its way to decode: in flight; launched but cancelled before its task ever ran
                # (so never sent), or held in the router's queue: not sent
                first = self._aborted.splitlines()[0]
                for req in self.frontend.requests:
                    if not req.status.ended:
                        req.fail(f"in flight when the run was aborted ({first})" if req.rid in led.prefill_results
                                 else f"not sent, run aborted ({first})")
            await asyncio.sleep(0.5 if listeners else 0)  # let the last KV events arrive
            after = await self._scrape_all(session)
            kv_stats = []
            for lst in listeners:
                await lst.stop()
                st = lst.stats
                kv_stats.append(st.__dict__.copy() if hasattr(st, "__dict__") else dict(st))
        not_sent = self.trace.n_requests - len(self.frontend.requests)
        return LiveRun(self.frontend.requests, led.results, self.cfg, list(self.urls), wall, not_sent,
                       self._aborted, [delta(b, a) for b, a in zip(before, after)], kv_stats,
                       self.clock.max_lag_ms, led.send_lag, self.decode_urls, led.decode_worker,
                       led.prefill_results, led.scheduled, self.warmup)
