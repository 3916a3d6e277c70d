"""One simulated engine in virtual time: runs scheduler passes back to back.

A regular pass is executed when it starts and its tokens are stamped at its
end. Stretches of uniform decode passes (nothing but token counts change) are
taken in one event; a request routed here mid-stretch cuts it at the first
pass boundary at or after its arrival, exactly where stepping pass by pass
would have admitted it.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from dynosim.engines.mocker.contract import PassResult, Scheduler
from dynosim.engines.mocker.kv_cache import EventSink
from dynosim.metrics.token_gaps import TokenGaps
from dynosim.request import Request
from dynosim.router.kv_event import KvEvent
from dynosim.clock import PRIO_ARRIVAL, PRIO_COMPLETION, PRIO_PASS_START, Clock


class Worker:
    """One engine slot: runs its scheduler's passes in ``clock``'s time and reports tokens to its frontend.

    ``make_scheduler(kv_sink)`` builds the engine's scheduler; the worker passes it the sink that buffers
    KV events until the pass that produced them ends (``None`` when nobody listens to this worker's events).
    """

    def __init__(self, wid: int, clock: Clock, make_scheduler: Callable[[EventSink | None], Scheduler],
                 gaps: TokenGaps, on_first_token: Callable[[Request], None], on_complete: Callable[[Request], None],
                 on_failed: Callable[[Request], None] | None = None,
                 fast_forward: bool = True,
                 on_kv_events: Callable[[int, list[KvEvent]], None] | None = None,
                 on_pass: Callable[["Worker", float, PassResult], None] | None = None,
                 admit_interval_ms: float = 0.0, client_latency_ms: float = 0.0):
        self.wid = wid
        self.admit_interval_ms = admit_interval_ms
        # a token the engine produces at t reaches the client at t + this (request and output handling)
        self.lat = client_latency_ms
        self._next_admit = -math.inf
        self.clock = clock
        self.gaps = gaps
        self.on_first_token = on_first_token
        self.on_complete = on_complete
        self.on_failed = on_failed
        self.fast_forward = fast_forward
        self.on_pass = on_pass
        # KV events of the running pass; published to the router when the pass ends
        self.kv_events: list[KvEvent] = []
        self.on_kv_events = on_kv_events
        self.sched = make_scheduler(self.record_kv_event if on_kv_events is not None else None)
        self._busy = False
        self._start_pending = False
        self._gen = 0
        # current stretch of uniform passes: start, end times, durations, passes to apply
        self._t0 = 0.0
        self._ends: np.ndarray | None = None
        self._durs: np.ndarray | None = None
        self._apply = 0
        self.busy_ms = 0.0
        # passes ended and the token budget they scheduled (the timeline differences these)
        self.passes_done = 0
        self.tokens_done = 0
        # when a list: one (start ms, duration ms, batch, scheduled tokens, prefill tokens) per pass (trace events)
        self.pass_log: list[tuple[float, float, int, int, int]] | None = None
        self._in_admission = 0     # routed here, admission deferred by the admit interval
        # called when the engine runs out of work (a draining worker can then shut down)
        self.on_idle: Callable[["Worker"], None] | None = None

    @property
    def idle(self) -> bool:
        """No pass running, nothing queued or about to be admitted."""
        return not self._busy and not self._start_pending and self._in_admission == 0 and not self.sched.has_work

    def progress(self, t: float) -> tuple[int, int]:
        """Passes ended by ``t`` and the tokens they scheduled, counting a stretch in flight by its passes'
        end times (a stretch is applied only when it ends)."""
        passes, tokens = self.passes_done, self.tokens_done
        ends = self._ends
        if ends is not None:
            k = int(np.searchsorted(ends[:self._apply], t, side="right"))
            passes += k
            tokens += k * len(self.sched.running)  # a uniform pass decodes every running request
        return passes, tokens

    # -- inputs -----------------------------------------------------------------
    def submit(self, req: Request) -> None:
        """Hand a routed request to this engine: now, or after the previous one plus ``admit_interval_ms``.

        A real server parses, validates and queues requests one at a time, so of
        several that arrive together only the first finds an idle engine; the
        rest join later passes. The interval reproduces that staircase.
        """
        if self.admit_interval_ms > 0.0:
            now = self.clock.now()
            t = max(now, self._next_admit)
            self._next_admit = t + self.admit_interval_ms
            if t > now:
                self._in_admission += 1
                self.clock.call_at(t, lambda: self._admit(req, True), PRIO_ARRIVAL)
                return
        self._admit(req)

    def _admit(self, req: Request, deferred: bool = False) -> None:
        if deferred:
            self._in_admission -= 1
        self.sched.add(req)
        if self._busy:
            if self._ends is not None:
                self._cut_stretch(self.clock.now())
        elif not self._start_pending:
            self._start_pending = True
            self.clock.call_at(self.clock.now(), self._start_pass, PRIO_PASS_START)

    # -- passes -----------------------------------------------------------------
    def _start_pass(self) -> None:
        self._start_pending = False
        sched = self.sched
        if not sched.has_work:
            return
        now = self.clock.now()
        k = sched.uniform_run() if self.fast_forward else 0
        if k >= 2:
            # A stretch records one gap of each pass for every request, which holds only if each
            # got a token when the last pass ended (not so for a decode skipped for lack of budget).
            for req in sched.running:
                if req.last_token != now + self.lat:
                    k = 0
                    break
        self._gen += 1
        gen = self._gen
        self._busy = True
        if k >= 2:
            durs = sched.uniform_durations(k)
            ends = np.cumsum(np.concatenate(([now], durs)))[1:]
            self._t0, self._ends, self._durs, self._apply = now, ends, durs, k
            end = float(ends[-1])
            self.clock.call_at(end, lambda: self._end_stretch(gen), PRIO_COMPLETION)
            return
        res = sched.step()
        if res.failed and self.on_failed is not None:
            for req in res.failed:
                self.on_failed(req)
        if res.duration_ms <= 0.0 and not (res.emitted or res.scheduled_tokens or res.preempted):
            # Nothing ran (e.g. the waiting head does not fit yet): wait for the next event.
            # A zero-duration pass that did make progress ends at once, like any other pass.
            self._busy = False
            if res.failed and sched.has_work:
                self._start_pending = True
                self.clock.call_at(now, self._start_pass, PRIO_PASS_START)
            elif self.on_idle is not None and self.idle:
                self.on_idle(self)
            return
        end = now + res.duration_ms
        self.clock.call_at(end, lambda: self._end_pass(gen, end, res), PRIO_COMPLETION)

    def _cut_stretch(self, t: float) -> None:
        ends = self._ends
        starts_before = int(np.searchsorted(ends[:-1], t, side="left")) + 1  # passes that began before t
        if starts_before >= self._apply:
            return
        self._apply = starts_before
        self._gen += 1
        gen = self._gen
        self.clock.call_at(float(ends[starts_before - 1]), lambda: self._end_stretch(gen), PRIO_COMPLETION)

    def _end_stretch(self, gen: int) -> None:
        if gen != self._gen:
            return
        c = self._apply
        ends, durs = self._ends, self._durs
        self._ends = self._durs = None
        end = float(ends[c - 1])
        n = len(self.sched.running)
        self.gaps.add_run(durs[:c], n)
        self.passes_done += c
        self.tokens_done += c * n
        if self.pass_log is not None:
            starts = [self._t0] + ends[:c - 1].tolist()
            self.pass_log.extend((t, d, n, n, 0) for t, d in zip(starts, durs[:c].tolist()))
        for req in self.sched.running:
            req.last_token = end + self.lat
        self.sched.advance_uniform(c)
        self._publish_kv_events()
        self.busy_ms += end - self._t0
        self._after_pass(end)

    def _end_pass(self, gen: int, end: float, res: PassResult) -> None:
        if gen != self._gen:  # pragma: no cover - regular passes are never cut
            return
        self._publish_kv_events()
        values, counts = self.gaps.values, self.gaps.counts
        for i, req in enumerate(res.emitted):
            if math.isnan(req.first_token):
                req.first_token = req.last_token = end + self.lat
                self.on_first_token(req)
            else:
                values.append(end + self.lat - req.last_token)
                counts.append(1)
                req.last_token = end + self.lat
            if res.tokens is not None and res.tokens[i] > 1:
                # the accepted drafts arrive with the pass's token: gaps of zero, as Dynamo records them
                values.append(0.0)
                counts.append(res.tokens[i] - 1)
        for req in res.completed:
            self.on_complete(req)
        self.busy_ms += res.duration_ms
        self.passes_done += 1
        self.tokens_done += res.scheduled_tokens
        if self.pass_log is not None:
            self.pass_log.append((end - res.duration_ms, res.duration_ms, res.scheduled_requests, res.scheduled_tokens,
                                  res.prefill_tokens))
        if self.on_pass is not None:
            self.on_pass(self, end, res)
        self._after_pass(end)

    def record_kv_event(self, event: KvEvent) -> None:
        """KvCache sink: buffer until the pass that produced the event ends."""
        self.kv_events.append(event)

    def _publish_kv_events(self) -> None:
        if self.kv_events:
            events, self.kv_events = self.kv_events, []
            if self.on_kv_events is not None:
                self.on_kv_events(self.wid, events)

    def _after_pass(self, end: float) -> None:
        self._busy = False
        if self.on_idle is not None and self.idle:
            self.on_idle(self)
            return
        if self.sched.has_work and not self._start_pending:
            if self.clock.next_time() > end:
                # Nothing else happens at this instant, so nothing could join the next pass
                # before it starts: start it now instead of through a same-time event.
                self._start_pass()
                return
            self._start_pending = True
            self.clock.call_at(end, self._start_pass, PRIO_PASS_START)
