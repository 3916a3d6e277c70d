"""The virtual frontend: admits trace arrivals, routes them, chains session turns.

First turns arrive at their (normalised, sped-up) timestamps; a later turn
arrives when the previous turn of its session completes plus its delay, as in
Dynamo's trace replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dynosim.request import Request
from dynosim.router.hashing import BlockHasher
from dynosim.router.router import Router
from dynosim.sim.clock import PRIO_ARRIVAL, Clock
from dynosim.sim.worker import Worker
from dynosim.traces.mooncake import Session, Trace


@dataclass
class TrafficCounters:
    """Running totals the planner differences per interval (what a live frontend's metrics count)."""

    arrived: int = 0
    arrived_isl: int = 0
    completed: int = 0
    completed_osl: int = 0
    prefilled: int = 0
    prefilled_isl: int = 0
    prefilled_reused: int = 0


class Frontend:
    def __init__(self, clock: Clock, trace: Trace, hasher: BlockHasher, router: Router,
                 workers: Sequence[Worker], kv_capacity_blocks: int, concurrency: int | None = None):
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
        req = Request(len(self.requests), row.input_length, row.output_length, row.hash_ids, seq, now,
                      session=session.session_id, turn=turn_idx, line=row.line, priority=_priority(row),
                      hints=row.extra)
        self.requests.append(req)
        self._turn_of[req.rid] = (session, turn_idx)
        c = self.counters
        c.arrived += 1
        c.arrived_isl += req.isl
        # The last output token's KV is never computed: the longest sequence an engine holds is
        # isl + osl - 1 tokens. Anything longer could never finish, so it fails up front.
        need = -(-(req.isl + req.osl - 1) // self.hasher.block_size)
        if need > self.capacity:
            req.status = f"failed: needs {need} KV blocks, engine holds {self.capacity}"
            self._next_turn(req, now)
            return
        self._route_new(req, now)

    def _route_new(self, req: Request, now: float) -> None:
        w = self.router.route(req, now)
        if w is not None:
            self.workers[w].submit(req)

    def _dispatch(self, released: list[tuple[Request, int]]) -> None:
        for req, w in released:
            req.status = "pending"
            self.workers[w].submit(req)

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


def _priority(row) -> int:
    """Request priority: the row's ``priority`` or NAT-style ``nvext.agent_hints.priority``."""
    if row.priority is not None:
        return row.priority
    hints = (row.extra.get("nvext") or {}).get("agent_hints") if isinstance(row.extra.get("nvext"), dict) else None
    p = hints.get("priority") if isinstance(hints, dict) else None
    return p if isinstance(p, int) and not isinstance(p, bool) else 0
