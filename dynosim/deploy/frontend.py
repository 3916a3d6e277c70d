"""Clock-neutral frontends: admit trace arrivals, route them, chain session turns (both worlds).

First turns arrive at their (normalised, sped-up) timestamps; a later turn
arrives when the previous turn of its session completes plus its delay, as in
Dynamo's trace replay. ``concurrency`` runs a closed loop instead.

``DisaggFrontend`` is disaggregated serving as Dynamo's offline replay does
it: each request first goes, as a hidden one-token twin, through the prefill
router to a prefill worker; when the twin completes, the prefill router frees
it and the KV hand-off starts (``LinkState``); when the KV has arrived the
original request, with its full output length, is routed by the decode router
to a decode worker.

Both take a ``dynosim.clock.Clock`` and workers that only need ``submit(req)``;
the simulator feeds them mocker workers on its SimClock, ``validate`` live
workers on the wall clock. Workers report back through ``on_first_token``,
``on_complete`` and ``on_failed`` (prefill workers of a disaggregated
deployment through ``on_prefill_*``).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from dynosim.clock import PRIO_ARRIVAL, Clock
from dynosim.disagg.transfer import LinkState
from dynosim.planner.planner import Traffic
from dynosim.request import Request, RequestStatus
from dynosim.router.hints import AgentHints
from dynosim.router.router import Router
from dynosim.traces.mooncake import Session, Trace


class Submits(Protocol):
    """What a frontend needs of a worker: take a routed request."""

    def submit(self, req: Request) -> None: ...


class Hasher(Protocol):
    """What a frontend needs of a hasher: a prompt's block hashes at the engine's block size."""

    block_size: int

    def sequence_hashes(self, hash_ids, input_length: int) -> list[int]: ...


TrafficCounters = Traffic    # the running totals a frontend counts (a live frontend's metrics)


class Frontend:
    def __init__(self, clock: Clock, trace: Trace, hasher: Hasher, router: Router,
                 workers: Sequence[Submits], kv_capacity_blocks: int, concurrency: int | None = None):
        """``concurrency``: closed loop, as a load generator with N users: N sessions are open at any
        time, the next one starting when one ends; the trace's timestamps are ignored (turn delays kept)."""
        self.clock = clock
        self.trace = trace
        self.hasher = hasher
        self.router = router
        self.workers = workers
        self.capacity = kv_capacity_blocks
        self.requests: list[Request] = []
        self._sessions: list[Session] = list(trace.sessions)
        self._next_session = 0
        self._turn_of: dict[int, tuple[Session, int]] = {}
        self._sessions_done = 0
        self.counters = TrafficCounters()
        self.concurrency = concurrency

    @property
    def finished(self) -> bool:
        """Every session of the trace has arrived and finished its last turn."""
        return self._sessions_done == len(self._sessions)

    def start(self) -> None:
        if not self._sessions:
            return
        if self.concurrency is not None:
            for _ in range(min(self.concurrency, len(self._sessions))):
                self.clock.call_at(0.0, self._open_next_session, PRIO_ARRIVAL)
            return
        self.clock.call_at(self._sessions[0].start_ms, self._arrive_next_session, PRIO_ARRIVAL)

    def _open_next_session(self) -> None:
        """Closed loop: the next session of the trace starts now (none when sessions that ended together
        already took the last ones)."""
        if self._next_session >= len(self._sessions):
            return
        session = self._sessions[self._next_session]
        self._next_session += 1
        self._admit(session, 0)

    def _arrive_next_session(self) -> None:
        session = self._sessions[self._next_session]
        self._next_session += 1
        if self._next_session < len(self._sessions):
            nxt = self._sessions[self._next_session]
            self.clock.call_at(nxt.start_ms, self._arrive_next_session, PRIO_ARRIVAL)
        self._admit(session, 0)

    def _admit(self, session: Session, turn_idx: int) -> None:
        row = session.turns[turn_idx].row
        now = self.clock.now()
        seq = self.hasher.sequence_hashes(row.hash_ids, row.input_length)
        rid = len(self.requests)
        agent = AgentHints.parse(row.extra, rid)   # the one parse of this request's agent hints
        req = Request(rid, row.input_length, row.output_length, row.hash_ids, seq, now,
                      session=session.session_id, turn=turn_idx, line=row.line, priority=_priority(row, agent),
                      hints=row.extra, agent=agent)
        self.requests.append(req)
        self._turn_of[req.rid] = (session, turn_idx)
        c = self.counters
        c.arrived += 1
        c.arrived_isl += req.isl
        # The last output token's KV is never computed: the longest sequence an engine holds is
        # isl + osl - 1 tokens. Anything longer could never finish, so it fails up front.
        need = -(-(req.isl + req.osl - 1) // self.hasher.block_size)
        if need > self.capacity:
            req.fail(f"needs {need} KV blocks, engine holds {self.capacity}")
            self._next_turn(req, now)
            return
        self._route_new(req, now)

    def _route_new(self, req: Request, now: float) -> None:
        _route(self.router, self.workers, req, now)

    def _dispatch(self, released: list[tuple[Request, int]]) -> None:
        _submit_released(released, self.workers)

    # -- engine signals -----------------------------------------------------------
    def _count_prefill(self, isl: int, reused: int) -> None:
        c = self.counters
        c.prefilled += 1
        c.prefilled_isl += isl
        c.prefilled_reused += reused

    def _count_completion(self, req: Request) -> None:
        c = self.counters
        c.completed += 1
        c.completed_osl += req.generated

    def on_first_token(self, req: Request) -> None:
        self._count_prefill(req.isl, req.reused)
        self._dispatch(self.router.on_first_token(req, self.clock.now()))

    def on_complete(self, req: Request) -> None:
        self._count_completion(req)
        self._dispatch(self.router.on_complete(req, self.clock.now()))
        self._next_turn(req, req.last_token)

    def on_failed(self, req: Request) -> None:
        self._dispatch(self.router.on_complete(req, self.clock.now()))
        self._next_turn(req, self.clock.now())

    def _next_turn(self, req: Request, t_done: float) -> None:
        session, idx = self._turn_of.pop(req.rid)
        if idx + 1 < len(session.turns):
            turn = session.turns[idx + 1]
            self.clock.call_at(t_done + turn.delay_ms, lambda: self._admit(session, idx + 1), PRIO_ARRIVAL)
        else:
            self._sessions_done += 1
            if self.concurrency is not None and self._next_session < len(self._sessions):
                self.clock.call_at(t_done, self._open_next_session, PRIO_ARRIVAL)


class DisaggFrontend(Frontend):
    def __init__(self, clock: Clock, trace: Trace, hasher: Hasher, prefill_router: Router,
                 prefill_workers: Sequence[Submits], decode_router: Router, decode_workers: Sequence[Submits],
                 kv_capacity_blocks: int, link: LinkState, concurrency: int | None = None):
        super().__init__(clock, trace, hasher, prefill_router, prefill_workers, kv_capacity_blocks, concurrency)
        self.decode_router = decode_router
        self.decode_workers = decode_workers
        self.link = link
        self._pending: dict[int, tuple[Request, Request]] = {}   # rid -> (twin, original) until prefill is done
        self._prefill_reuse: dict[int, tuple[int, int]] = {}      # rid -> prefill-side (reused, first_reused)
        self.transfers_in_flight = 0                             # hand-offs started whose KV has not landed

    def _route_new(self, req: Request, now: float) -> None:
        twin = Request(req.rid, req.isl, 1, req.hash_ids, req.seq_hashes, now, session=req.session, turn=req.turn,
                       line=req.line, priority=req.priority, hints=req.hints, agent=req.agent)
        self._pending[req.rid] = (twin, req)
        w = self.router.route(twin, now)
        if w is not None:
            self.workers[w].submit(twin)
        else:
            req.status, req.failure = twin.status, twin.failure

    # -- prefill workers ---------------------------------------------------------------
    def on_prefill_first_token(self, twin: Request) -> None:
        self._dispatch(self.router.on_first_token(twin, self.clock.now()))

    def on_prefill_complete(self, twin: Request) -> None:
        now = self.clock.now()
        self._dispatch(self.router.on_complete(twin, now))
        _, req = self._pending.pop(twin.rid)
        req.routed = twin.routed
        self._prefill_reuse[req.rid] = (twin.reused, twin.first_reused)
        self._count_prefill(twin.isl, twin.reused)
        req.status = RequestStatus.TRANSFERRING
        self.transfers_in_flight += 1
        self.clock.call_at(self.link.schedule(now, req.isl), lambda: self._to_decode(req), PRIO_ARRIVAL)

    def on_prefill_failed(self, twin: Request) -> None:
        now = self.clock.now()
        self._dispatch(self.router.on_complete(twin, now))
        _, req = self._pending.pop(twin.rid)
        req.status, req.failure = twin.status, twin.failure
        self._next_turn(req, now)

    def _dispatch(self, released: list[tuple[Request, int]]) -> None:
        for twin, w in released:
            twin.status = RequestStatus.PENDING
            self._pending[twin.rid][1].status = RequestStatus.PENDING
            self.workers[w].submit(twin)

    # -- decode workers -------------------------------------------------------------------
    def _to_decode(self, req: Request) -> None:
        self.transfers_in_flight -= 1
        req.status = RequestStatus.PENDING
        _route(self.decode_router, self.decode_workers, req, self.clock.now())

    def _dispatch_decode(self, released: list[tuple[Request, int]]) -> None:
        _submit_released(released, self.decode_workers)

    def on_first_token(self, req: Request) -> None:
        self._dispatch_decode(self.decode_router.on_first_token(req, self.clock.now()))

    def on_complete(self, req: Request) -> None:
        self._count_completion(req)
        self._dispatch_decode(self.decode_router.on_complete(req, self.clock.now()))
        req.reused, req.first_reused = self._prefill_reuse.pop(req.rid)
        self._next_turn(req, req.last_token)

    def on_failed(self, req: Request) -> None:
        self._dispatch_decode(self.decode_router.on_complete(req, self.clock.now()))
        self._prefill_reuse.pop(req.rid, None)
        self._next_turn(req, self.clock.now())


def _route(router: Router, workers: Sequence[Submits], req: Request, now: float) -> None:
    """Route ``req`` and hand it to the chosen worker (the router may hold it in its queue instead)."""
    w = router.route(req, now)
    if w is not None:
        workers[w].submit(req)


def _submit_released(released: list[tuple[Request, int]], workers: Sequence[Submits]) -> None:
    """Hand requests the router released from its queue to the workers it chose for them."""
    for req, w in released:
        req.status = RequestStatus.PENDING
        workers[w].submit(req)


def _priority(row, agent: AgentHints) -> int:
    """Request priority: the row's ``priority``, else its parsed NAT-style ``nvext.agent_hints.priority``."""
    return row.priority if row.priority is not None else agent.priority
