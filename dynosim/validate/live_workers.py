"""Live workers: a deployment's workers when its engines are real servers (``build_deployment``'s factory).

One kind per pool role, each behind the frontend's ``submit(req)`` and reporting through its
``WorkerSignals``, so the live replay runs the simulator's very frontend and routers:

- ``AggregatedWorker`` streams the prompt to its server and reports the first token, then the
  completion or the failure (with its reason).
- ``PrefillWorker`` (disaggregated) gets the frontend's one-token twin, asks its server for a
  prefill with a KV hand-off (``LiveClient.prefill_handoff``), keeps the answer's
  ``kv_transfer_params`` by request id and reports the twin's first token and completion (the
  frontend's ``on_prefill_*``); the frontend then has the decode router pick a decode worker. A
  failed prefill ends the original request, failed with the reason.
- ``DecodeWorker`` streams the original request with the kept ``kv_transfer_params``: the engine
  pulls the KV (NIXL) inside that request, so the frontend's link takes no time (``instant_link``).

``LiveLedger`` is what the workers of one run record together (results, hand-offs, send lag,
counts); ``warm_up_handoffs`` does one hand-off per (prefill, decode) pair before the clock starts.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Callable

from dynosim.clock import WallClock
from dynosim.deploy.assembly import WorkerSignals
from dynosim.disagg.transfer import Handoff, Link, LinkState
from dynosim.engines.live.client import CompletionResult, LiveClient
from dynosim.request import Request, RequestStatus
from dynosim.validate.prompts import WARMUP_HASH_BASE, PromptHasher


def instant_link() -> LinkState:
    """The live hand-off as the frontend sees it: no modelled time (the decode request pulls the KV itself,
    so the transfer's real cost is in the measured decode request)."""
    return LinkState(Handoff(0.0, Link(1.0, 0.0), False, "live: pulled by the decode request (NIXL)"))


@dataclass
class LiveLedger:
    """What the live workers of one run record, for the replay to report."""

    clock: WallClock
    hasher: PromptHasher
    progress: Callable[[int, int, int], None] | None = None
    n_requests: int = 0
    requests: list[Request] = field(default_factory=list)            # the frontend's, indexed by rid
    results: dict[int, CompletionResult] = field(default_factory=dict)
    prefill_results: dict[int, CompletionResult] = field(default_factory=dict)
    handoffs: dict[int, dict] = field(default_factory=dict)          # rid -> kv_transfer_params awaiting decode
    decode_worker: dict[int, int] = field(default_factory=dict)
    scheduled: dict[int, float] = field(default_factory=dict)        # trace arrival, where arrival is the send time
    send_lag: list[float] = field(default_factory=list)
    done: int = 0
    failed: int = 0

    def sent(self, req: Request) -> None:
        self.send_lag.append(max(0.0, self.clock.wall_ms() - req.arrival))

    def on_token(self, req: Request, signals: WorkerSignals) -> Callable[[float, int], None]:
        clock = self.clock
        started = False

        def on_token(t_ms: float, n: int) -> None:
            nonlocal started
            t = clock.from_monotonic_ms(t_ms)
            req.generated += n
            req.last_token = t
            if not started:
                started = True
                req.first_token = t
                signals.on_first_token(req)
        return on_token

    def end(self, req: Request, res: CompletionResult, t_send_ms: float, signals: WorkerSignals,
            twin: Request | None = None) -> None:
        """``req`` (a request of the trace) ended with ``res``: record it, done or failed with the reason, and
        tell ``signals`` (of ``twin``, its prefill twin, when the prefill is what failed)."""
        self.results[req.rid] = res
        # aiperf's TTFT runs from when the request was actually sent: a late client is not the engine's fault
        self.scheduled[req.rid] = req.arrival
        req.arrival = self.clock.from_monotonic_ms(t_send_ms)
        problem = res.error
        if res.ok:
            if res.completion_tokens != req.osl:
                problem = f"expected {req.osl} output tokens, the engine returned {res.completion_tokens}"
            elif res.prompt_tokens is not None and res.prompt_tokens != req.isl:
                problem = f"sent {req.isl} prompt tokens, the engine counted {res.prompt_tokens}"
        if res.cached_tokens is not None:
            req.reused = req.first_reused = res.cached_tokens
        req.generated = res.completion_tokens
        self.done += 1
        if problem is None:
            req.status = RequestStatus.DONE
            req.last_token = self.clock.from_monotonic_ms(res.t_last_token_ms)
            signals.on_complete(req)
        else:
            self.failed += 1
            (twin or req).fail(problem)
            signals.on_failed(twin or req)
        if self.progress is not None:
            self.progress(self.done, self.n_requests, self.failed)


class LiveWorker:
    """One live endpoint of a pool, behind the frontend's ``submit``; ``launch(worker, req)`` runs ``serve``."""

    def __init__(self, pool: str, wid: int, url: str, client: LiveClient, signals: WorkerSignals,
                 ledger: LiveLedger, launch: Callable[["LiveWorker", Request], None]):
        self.pool = pool
        self.wid = wid
        self.url = url
        self.client = client
        self.signals = signals
        self.ledger = ledger
        self._launch = launch

    def submit(self, req: Request) -> None:
        self._launch(self, req)

    def prompt(self, req: Request) -> list[int]:
        return self.ledger.hasher.prompt(req.hash_ids, req.isl)

    async def serve(self, req: Request) -> None:
        raise NotImplementedError


class AggregatedWorker(LiveWorker):
    async def serve(self, req: Request) -> None:
        led = self.ledger
        led.sent(req)
        res = await self.client.complete(self.prompt(req), req.osl, request_id=f"dynosim-{req.rid}",
                                         on_token=led.on_token(req, self.signals))
        led.end(req, res, res.t_send_ms, self.signals)


class PrefillWorker(LiveWorker):
    async def serve(self, twin: Request) -> None:
        led = self.ledger
        led.sent(twin)
        pre = await self.client.prefill_handoff(self.prompt(twin), request_id=f"dynosim-{twin.rid}-prefill")
        led.prefill_results[twin.rid] = pre
        if not pre.ok:
            led.end(led.requests[twin.rid], pre, pre.t_send_ms, self.signals, twin=twin)
            return
        led.handoffs[twin.rid] = pre.kv_transfer_params
        twin.first_token = twin.last_token = led.clock.from_monotonic_ms(pre.t_first_token_ms)
        twin.generated = 1
        if pre.cached_tokens is not None:   # prefix hits happen where the prompt is computed
            twin.reused = twin.first_reused = pre.cached_tokens
        self.signals.on_first_token(twin)
        twin.status = RequestStatus.DONE
        self.signals.on_complete(twin)


class DecodeWorker(LiveWorker):
    async def serve(self, req: Request) -> None:
        led = self.ledger
        pre = led.prefill_results[req.rid]
        led.decode_worker[req.rid] = self.wid
        res = await self.client.complete(self.prompt(req), req.osl, request_id=f"dynosim-{req.rid}",
                                         on_token=led.on_token(req, self.signals),
                                         extra_body={"kv_transfer_params": led.handoffs.pop(req.rid)})
        res.cached_tokens = pre.cached_tokens   # reported where the prompt was computed
        led.end(req, res, pre.t_send_ms, self.signals)


WORKER_OF_POOL: dict[str, type[LiveWorker]] = {"workers": AggregatedWorker, "prefill": PrefillWorker,
                                               "decode": DecodeWorker}


async def warm_up_handoffs(prefill: list[LiveWorker], decode: list[LiveWorker], hasher: PromptHasher,
                           block_size: int, attempts: int, retry_s: float) -> tuple[str | None, dict]:
    """One hand-off per (prefill, decode) pair before the clock starts: (why it failed or None, what it took).

    vLLM's first transfer between two instances does the NIXL handshake
    (metadata over the side channel, with a 5 s receive timeout), and a
    failed handshake fails the request waiting on it. Doing it here keeps
    that one-time cost out of the measured TTFT, and a handshake that a
    busy host answers late is retried instead of losing a trace request.
    """
    length = 2 * block_size
    tries, errors = 0, []
    for p, pw in enumerate(prefill):
        for d, dw in enumerate(decode):
            # hash ids far outside any trace's: the warm-up prompt shares no prefix with trace prompts
            first = WARMUP_HASH_BASE + 64 * (p * len(decode) + d)
            prompt = hasher.prompt(list(range(first, first + math.ceil(length / hasher.trace_block_size))), length)
            for k in range(attempts):
                tries += 1
                rid = f"dynosim-warmup-p{p}-d{d}-{k}"
                res = await pw.client.prefill_handoff(prompt, request_id=f"{rid}-prefill")
                if res.ok:
                    res = await dw.client.complete(prompt, 2, request_id=rid,
                                                   extra_body={"kv_transfer_params": res.kv_transfer_params})
                    if res.ok and res.completion_tokens != 2:
                        res.error = f"expected 2 output tokens, the engine returned {res.completion_tokens}"
                        res.status = "error"
                if res.ok:
                    break
                errors.append(f"prefill {p} -> decode {d}, attempt {k + 1}: {res.error}")
                if k + 1 < attempts:
                    await asyncio.sleep(retry_s)
            else:
                return (f"the KV hand-off from prefill {pw.url} to decode {dw.url} failed {attempts} times "
                        f"before the run; last: {errors[-1]}"), {"attempts": tries, "errors": errors}
    return None, {"attempts": tries, "errors": errors}
