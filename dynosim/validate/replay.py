"""Replay a trace on the wall clock against live engines, routed by dynosim's own router.

The same ``Frontend`` (arrivals, session turns) and ``Router`` (policy,
indexer, load, queue) objects the simulator uses run here on a ``WallClock``;
only the workers differ: a ``LiveWorker`` streams the request's token-id
prompt to a live server instead of simulating it. Prompts come from the
trace's ``hash_ids`` (``engines.live.prompts``), so shared hash prefixes are
shared token prefixes in the engine, and the router hashes those very tokens
(the KV events a live engine publishes carry the same tokens, so its indexer
and the engine agree).

Nothing is lost: a request that errors, times out (whole request, or a
stream silent for ``idle_timeout_s``), or returns a token count other than
the trace's is recorded as failed with the reason; when a server dies (or
stops answering ``/health``) or ``abort()`` is called (Ctrl-C) the run ends at
once, in-flight requests are marked failed, and the rows never sent are
counted. ``heartbeat(state)`` is called every ``heartbeat_every_s`` with the
requests finished, failed, in flight and not sent yet, so a caller can say
what the run is waiting for.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp
import numpy as np
import pandas as pd

from dynosim.clock import WallClock
from dynosim.config import DisaggConfig, RunConfig
from dynosim.deploy.routers import aggregated_router, decode_router, prefill_router
from dynosim.engines.live.client import CompletionResult, LiveClient
from dynosim.engines.live.metrics import MetricsError, delta, scrape
from dynosim.engines.live.prompts import prompt_token_ids
from dynosim.metrics.collector import requests_frame, summarize
from dynosim.request import Request
from dynosim.router.hashing import block_hashes_of_tokens
from dynosim.router.router import Router
from dynosim.deploy.frontend import Frontend
from dynosim.traces.mooncake import Trace


WARMUP_HASH_BASE = 1 << 60   # hash ids of warm-up prompts, far above any trace's


class PromptHasher:
    """What the frontend needs of a hasher, for live runs: the real prompt's block hashes.

    ``prepare(trace)`` builds every prompt (int32 arrays) and its hashes before
    the clock starts, so the replay's event loop does no hashing while it
    should be sending requests on time.
    """

    def __init__(self, block_size: int, trace_block_size: int, *, vocab_size: int, low: int = 4,
                 high: int | None = None, seed: int = 0):
        self.block_size = block_size
        self.trace_block_size = trace_block_size
        self._kw = dict(trace_block_size=trace_block_size, vocab_size=vocab_size, low=low, high=high, seed=seed)
        self._memo: dict[tuple[tuple[int, ...], int], tuple[np.ndarray, list[int]]] = {}

    def _entry(self, hash_ids, input_length: int) -> tuple[np.ndarray, list[int]]:
        key = (tuple(hash_ids), input_length)
        hit = self._memo.get(key)
        if hit is None:
            tokens = prompt_token_ids(hash_ids, input_length, **self._kw)
            hit = (np.asarray(tokens, dtype=np.int32), block_hashes_of_tokens(tokens, self.block_size)[1])
            self._memo[key] = hit
        return hit

    def prepare(self, trace: Trace) -> int:
        for session in trace.sessions:
            for turn in session.turns:
                self._entry(turn.row.hash_ids, turn.row.input_length)
        return len(self._memo)

    def prompt(self, hash_ids, input_length: int) -> list[int]:
        return self._entry(hash_ids, input_length)[0].tolist()

    def sequence_hashes(self, hash_ids, input_length: int) -> list[int]:
        return self._entry(hash_ids, input_length)[1]


class LiveWorker:
    """One live endpoint behind the frontend's ``submit`` interface."""

    def __init__(self, wid: int, client: LiveClient, replay: "LiveReplay"):
        self.wid = wid
        self.client = client
        self._replay = replay

    def submit(self, req: Request) -> None:
        self._replay._launch(self, req)


@dataclass
class LiveRun:
    """What a live replay leaves behind."""

    requests: list[Request]
    results: dict[int, CompletionResult]
    config: RunConfig
    urls: list[str]
    wall_s: float
    not_sent: int
    aborted: str | None
    engine_deltas: list[dict[str, float]]
    kv_event_stats: list[dict] = field(default_factory=list)
    max_clock_lag_ms: float = 0.0
    send_lag_ms: list[float] = field(default_factory=list)
    decode_urls: list[str] = field(default_factory=list)   # disaggregated: the decode pool (urls = prefill)
    decode_worker: dict[int, int] = field(default_factory=dict)
    prefill_results: dict[int, CompletionResult] = field(default_factory=dict)
    scheduled: dict[int, float] = field(default_factory=dict)  # trace arrival, where arrival_ms is the send time
    warmup: dict = field(default_factory=dict)                 # disaggregated: hand-offs before the clock started

    def frame(self) -> pd.DataFrame:
        df = requests_frame(self.requests)
        err = [None if (res := self.results.get(r.rid)) is None else res.error for r in self.requests]
        df["error"] = err
        df["scheduled_ms"] = [self.scheduled.get(r.rid, r.arrival) for r in self.requests]
        df["cached_tokens_reported"] = [
            None if (res := self.results.get(r.rid)) is None else res.cached_tokens for r in self.requests]
        if self.decode_urls:
            df["decode_worker"] = [self.decode_worker.get(r.rid, -1) for r in self.requests]
            df["prefill_ms"] = [(p.t_end_ms - p.t_send_ms) if (p := self.prefill_results.get(r.rid)) is not None
                                and p.ok else np.nan for r in self.requests]
        return df

    def token_gaps(self) -> np.ndarray:
        gaps = [np.diff(np.asarray(res.per_token_times_ms(), float))
                for res in self.results.values() if res.ok and len(res.token_times_ms) > 1]
        return np.concatenate(gaps) if gaps else np.zeros(0)

    def summary(self) -> dict:
        df = requests_frame(self.requests)
        gaps = self.token_gaps()
        slo = self.config.slo
        s = summarize(df, gaps, np.ones(len(gaps), dtype=np.int64), self.config.num_gpus,
                      slo_ttft_ms=slo.ttft_ms, slo_itl_ms=slo.itl_ms, slo_e2e_ms=slo.e2e_ms)
        s["requests"]["not_sent"] = self.not_sent
        s["requests"]["total"] += self.not_sent
        s["aborted"] = self.aborted
        s["failure_reasons"] = failure_reasons(self.requests)
        s["complete"] = measured_is_complete(s)
        hits = sum(d.get("prefix_cache_hits", 0.0) for d in self.engine_deltas)
        queries = sum(d.get("prefix_cache_queries", 0.0) for d in self.engine_deltas)
        s["engine_counters"] = {"prefix_cache_hits": hits, "prefix_cache_queries": queries,
                                "preemptions": sum(d.get("preemptions", 0.0) for d in self.engine_deltas),
                                "per_worker": self.engine_deltas}
        per_request = not df.empty and all(
            res.cached_tokens is not None for res in self.results.values() if res.ok)
        if queries > 0 and not per_request:
            # engines that do not report cached tokens per request: reuse from their own counters
            s["prefix_reuse_ratio"] = hits / queries
        s["prefix_reuse_source"] = "per-request usage" if per_request else (
            "engine counters" if queries > 0 else "unavailable")
        s["preemptions"] = int(s["engine_counters"]["preemptions"])
        s["kv_events"] = self.kv_event_stats
        if self.decode_urls:
            pre = [p.t_end_ms - p.t_send_ms for p in self.prefill_results.values() if p.ok]
            s["disaggregated"] = {"prefill_workers": len(self.urls), "decode_workers": len(self.decode_urls),
                                  "prefill_handoff_ms_p50": float(np.median(pre)) if pre else float("nan"),
                                  "handoffs": len(pre)}
        s["live"] = {"warmup": self.warmup, "wall_s": self.wall_s, "urls": self.urls + self.decode_urls,
                     "max_clock_lag_ms": self.max_clock_lag_ms,
                     "send_lag_ms_p99": float(np.percentile(self.send_lag_ms, 99)) if self.send_lag_ms else 0.0}
        return s


class LiveReplay:
    """Drive ``trace`` through live endpoints with ``cfg``'s router, on the wall clock.

    ``kv_listeners``: factories ``(worker, on_event) -> listener`` (objects with
    async ``start``/``stop`` and ``stats``), one per worker, when the router
    indexes KV events. ``servers``: launched processes to watch; a dead one
    ends the run. ``health_every_s`` polls ``/health`` of attached endpoints
    too: ``health_failures`` misses in a row end the run.
    """

    def __init__(self, trace: Trace, cfg: RunConfig, urls: list[str], model: str, *, vocab_size: int = 2048,
                 token_low: int = 4, token_high: int | None = None, prompt_seed: int = 0,
                 request_timeout_s: float = 600.0, idle_timeout_s: float | None = 60.0,
                 connect_timeout_s: float = 10.0, kv_listeners: list[Callable] | None = None,
                 servers: list | None = None, health_every_s: float = 2.0, health_failures: int = 3,
                 progress: Callable[[int, int, int], None] | None = None,
                 heartbeat: Callable[[dict], None] | None = None, heartbeat_every_s: float = 1.0,
                 decode_urls: list[str] | None = None, warmup_attempts: int = 3, warmup_retry_s: float = 2.0,
                 kv_connect_timeout_s: float = 10.0):
        if len(urls) != cfg.workers:
            raise ValueError(f"the deployment has {cfg.workers} worker(s) but {len(urls)} endpoint(s) were given")
        self.trace = trace
        self.cfg = cfg
        self.urls = urls
        self.decode_urls = list(decode_urls or [])
        self.all_urls = list(urls) + self.decode_urls
        self._decode_inflight = [0] * len(self.decode_urls)
        self._decode_worker: dict[int, int] = {}
        self._prefill_results: dict[int, CompletionResult] = {}
        self._scheduled: dict[int, float] = {}   # trace arrival time of requests whose arrival became the send time
        self.model = model
        self.request_timeout_s = request_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat = heartbeat
        self.heartbeat_every_s = heartbeat_every_s
        self.hasher = PromptHasher(cfg.engine.block_size, cfg.trace_block_size, vocab_size=vocab_size,
                                   low=token_low, high=token_high, seed=prompt_seed)
        self.kv_listener_factories = kv_listeners
        self.servers = servers or []
        self.health_every_s = health_every_s
        self.health_failures = health_failures
        self.progress = progress
        self.results: dict[int, CompletionResult] = {}
        self._inflight: dict[asyncio.Task, Request] = {}
        self._aborted: str | None = None
        self._abort_event: asyncio.Event | None = None
        self._send_lag: list[float] = []
        self._done = 0
        self._failed = 0
        self._worker_state: list[tuple[float, int]] = [(0.0, 0)] * cfg.workers
        self.kv_connect_timeout_s = kv_connect_timeout_s
        self.warmup_attempts = warmup_attempts
        self.warmup_retry_s = warmup_retry_s
        self.warmup: dict = {}

    # -- wiring ---------------------------------------------------------------------
    def deployment_config(self) -> RunConfig:
        """The deployment as the simulator sees it: ``cfg``, with its prefill and decode pools sized to the
        endpoints when there is a decode pool (``cfg.disagg``, or a plain one when the config has none)."""
        if not self.decode_urls:
            return self.cfg
        d = self.cfg.disagg if self.cfg.disagg is not None else DisaggConfig()
        d = d.model_copy(update={"prefill_workers": len(self.urls), "decode_workers": len(self.decode_urls)})
        return RunConfig(**{**self.cfg.model_dump(), "disagg": d.model_dump()})

    def _router(self) -> Router:
        """The router new requests meet: the aggregated one, or (with a decode pool) the simulator's prefill router."""
        metrics = lambda w: self._worker_state[w]  # noqa: E731
        if not self.decode_urls:
            return aggregated_router(self.cfg, metrics)
        return prefill_router(self.deployment_config(), metrics)

    def _decode_router_of(self) -> Router | None:
        """With a decode pool: the simulator's decode router (``deploy.routers.decode_router``), same code, same
        settings: round robin when the deployment routes round robin, else decode blocks only."""
        if not self.decode_urls:
            return None
        return decode_router(self.deployment_config())

    def _launch(self, worker: LiveWorker, req: Request) -> None:
        if self._aborted is not None:
            req.status = f"failed: not sent, run aborted ({self._aborted.splitlines()[0]})"
            return
        task = asyncio.get_running_loop().create_task(self._serve(worker, req))
        self._inflight[task] = req

    async def _serve(self, worker: LiveWorker, req: Request) -> None:
        clock, frontend = self.clock, self.frontend
        prompt = self.hasher.prompt(req.hash_ids, req.isl)
        started = False

        def on_token(t_ms: float, n: int) -> None:
            nonlocal started
            t = clock.from_monotonic_ms(t_ms)
            req.generated += n
            req.last_token = t
            if not started:
                started = True
                req.first_token = t
                frontend.on_first_token(req)

        self._send_lag.append(max(0.0, clock.wall_ms() - req.arrival))
        try:
            if self.decode_urls:
                res = await self._serve_disaggregated(worker, req, prompt, on_token)
            else:
                res = await worker.client.complete(prompt, req.osl, request_id=f"dynosim-{req.rid}",
                                                   on_token=on_token)
        except asyncio.CancelledError:
            req.status = f"failed: in flight when the run was aborted ({(self._aborted or 'cancelled').splitlines()[0]})"
            raise
        self.results[req.rid] = res
        # aiperf's TTFT runs from when the request was actually sent: a late client is not the engine's fault
        pre = self._prefill_results.get(req.rid)
        self._scheduled[req.rid] = req.arrival
        req.arrival = clock.from_monotonic_ms(pre.t_send_ms if pre is not None else res.t_send_ms)
        problem = res.error
        if res.ok:
            if res.completion_tokens != req.osl:
                problem = f"expected {req.osl} output tokens, the engine returned {res.completion_tokens}"
            elif res.prompt_tokens is not None and res.prompt_tokens != req.isl:
                problem = f"sent {req.isl} prompt tokens, the engine counted {res.prompt_tokens}"
        if res.cached_tokens is not None:
            req.reused = req.first_reused = res.cached_tokens
        req.generated = res.completion_tokens
        self._done += 1
        if problem is None:
            req.status = "done"
            req.last_token = clock.from_monotonic_ms(res.t_last_token_ms)
            frontend.on_complete(req)
        else:
            req.status = f"failed: {problem}"
            self._failed += 1
            frontend.on_failed(req)
        if self.progress is not None:
            self.progress(self._done, self.trace.n_requests, self._failed)

    async def _serve_disaggregated(self, worker: LiveWorker, req: Request, prompt: list[int],
                                   on_token: Callable[[float, int], None]) -> CompletionResult:
        """Prefill on the routed worker, hand the KV off (NIXL), decode where the simulator's decode router says.

        The decode worker is chosen by the very router the prediction uses (``deploy.routers.decode_router``:
        round robin for a round-robin deployment, else the ``kv`` policy on decode blocks only), told of the
        request's first token and completion as in the simulator, so both worlds run one deployment.
        """
        pre = await worker.client.prefill_handoff(prompt, request_id=f"dynosim-{req.rid}-prefill")
        self._prefill_results[req.rid] = pre
        if not pre.ok:
            return pre
        router = self.decode_router
        # the decode router sees its own copy of the request (the prefill router tracks the original until it
        # completes); it never queues (no threshold), so it always names a worker
        dreq = Request(req.rid, req.isl, req.osl, req.hash_ids, req.seq_hashes, req.arrival, session=req.session,
                       turn=req.turn, line=req.line, priority=req.priority, hints=req.hints)
        d = router.route(dreq, self.clock.now())
        self._decode_worker[req.rid] = d
        self._decode_inflight[d] += 1
        first = True

        def on_decode_token(t_ms: float, n: int) -> None:
            nonlocal first
            if first:
                first = False
                router.on_first_token(dreq, self.clock.now())
            on_token(t_ms, n)
        try:
            res = await self._decode_clients[d].complete(
                prompt, req.osl, request_id=f"dynosim-{req.rid}", on_token=on_decode_token,
                extra_body={"kv_transfer_params": pre.kv_transfer_params})
        finally:
            self._decode_inflight[d] -= 1
            router.on_complete(dreq, self.clock.now())
        res.cached_tokens = pre.cached_tokens  # prefix hits happen where the prompt is computed
        return res

    async def _warm_up_handoffs(self, prefill: list[LiveClient]) -> str | None:
        """One hand-off per (prefill, decode) pair before the clock starts; the reason it failed, else None.

        vLLM's first transfer between two instances does the NIXL handshake
        (metadata over the side channel, with a 5 s receive timeout), and a
        failed handshake fails the request waiting on it. Doing it here keeps
        that one-time cost out of the measured TTFT, and a handshake that a
        busy host answers late is retried instead of losing a trace request.
        """
        bs = self.cfg.engine.block_size
        tbs = self.cfg.trace_block_size
        length = 2 * bs
        attempts, errors = 0, []
        for p, pre_client in enumerate(prefill):
            for d, dec_client in enumerate(self._decode_clients):
                # hash ids far outside any trace's: the warm-up prompt shares no prefix with trace prompts
                first = WARMUP_HASH_BASE + 64 * (p * len(self._decode_clients) + d)
                prompt = self.hasher.prompt(list(range(first, first + math.ceil(length / tbs))), length)
                for k in range(self.warmup_attempts):
                    attempts += 1
                    rid = f"dynosim-warmup-p{p}-d{d}-{k}"
                    res = await pre_client.prefill_handoff(prompt, request_id=f"{rid}-prefill")
                    if res.ok:
                        res = await dec_client.complete(prompt, 2, request_id=rid,
                                                        extra_body={"kv_transfer_params": res.kv_transfer_params})
                        if res.ok and res.completion_tokens != 2:
                            res.error = f"expected 2 output tokens, the engine returned {res.completion_tokens}"
                            res.status = "error"
                    if res.ok:
                        break
                    errors.append(f"prefill {p} -> decode {d}, attempt {k + 1}: {res.error}")
                    if k + 1 < self.warmup_attempts:
                        await asyncio.sleep(self.warmup_retry_s)
                else:
                    self.warmup = {"attempts": attempts, "errors": errors}
                    return (f"the KV hand-off from prefill {self.urls[p]} to decode {self.decode_urls[d]} failed "
                            f"{self.warmup_attempts} times before the run; last: {errors[-1]}")
        self.warmup = {"attempts": attempts, "errors": errors}
        return None

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
        """Engine KV usage and queue length for policies that read them (Thompson, device-aware)."""
        while self._aborted is None:
            for w, url in enumerate(self.urls):
                try:
                    m = await scrape(url, session=session, timeout_s=5)
                    self._worker_state[w] = (m.get("kv_cache_usage", 0.0), int(m.get("waiting", 0)))
                except MetricsError:
                    pass
            await asyncio.sleep(1.0)

    def state(self) -> dict:
        """Where the run stands: requests finished (and failed), in flight, not sent yet, the oldest in flight."""
        now = self.clock.wall_ms()
        flying = [req for task, req in self._inflight.items() if not task.done()]
        oldest = max((now - req.arrival for req in flying), default=0.0)
        return {"elapsed_s": now / 1000.0, "done": self._done, "failed": self._failed, "inflight": len(flying),
                "not_sent": max(0, self.trace.n_requests - self._done - len(flying)),
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
        self.router = self._router()
        self.decode_router = self._decode_router_of()
        self.hasher.prepare(self.trace)
        self._abort_event = asyncio.Event()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            timeouts = dict(timeout_s=self.request_timeout_s, idle_timeout_s=self.idle_timeout_s,
                            connect_timeout_s=self.connect_timeout_s, session=session)
            workers = [LiveWorker(w, LiveClient(url, self.model, **timeouts), self)
                       for w, url in enumerate(self.urls)]
            self._decode_clients = [LiveClient(url, self.model, **timeouts) for url in self.decode_urls]
            self.frontend = Frontend(self.clock, self.trace, self.hasher, self.router, workers,
                                     self.cfg.engine.num_gpu_blocks)
            listeners = []
            if self.router.wants_kv_events:
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
            if self.decode_urls:
                problem = await self._warm_up_handoffs([w.client for w in workers])
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
                # launched but cancelled before its task ever ran (so never sent), or held in the router's queue
                for req in self.frontend.requests:
                    if req.status != "done" and not req.status.startswith("failed"):
                        req.status = f"failed: not sent, run aborted ({self._aborted.splitlines()[0]})"
            await asyncio.sleep(0.5 if listeners else 0)  # let the last KV events arrive
            after = await self._scrape_all(session)
            kv_stats = []
            for lst in listeners:
                await lst.stop()
                st = lst.stats
                kv_stats.append(st.__dict__.copy() if hasattr(st, "__dict__") else dict(st))
        not_sent = self.trace.n_requests - len(self.frontend.requests)
        return LiveRun(self.frontend.requests, self.results, self.cfg, list(self.urls), wall, not_sent,
                       self._aborted, [delta(b, a) for b, a in zip(before, after)], kv_stats,
                       self.clock.max_lag_ms, self._send_lag, self.decode_urls, self._decode_worker,
                       self._prefill_results, self._scheduled, self.warmup)


def failure_reasons(requests: list[Request], limit: int = 10) -> dict[str, int]:
    """Distinct reasons requests failed, most frequent first, so a lost request is never a bare count."""
    counts: dict[str, int] = {}
    for r in requests:
        if r.status.startswith("failed"):
            reason = r.status.removeprefix("failed:").strip().splitlines()[0][:300] or "unknown"
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:limit])


def measured_is_complete(summary: dict) -> bool:
    r = summary["requests"]
    return r["failed"] == 0 and r["unfinished"] == 0 and r.get("not_sent", 0) == 0 and not summary.get("aborted")


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
