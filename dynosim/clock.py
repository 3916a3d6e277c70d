"""The clock abstraction shared by the simulator and live runs.

Router, planner and engine code only ever see a ``Clock``: ``now()`` in
milliseconds and ``call_at(t, fn, priority)``. ``dynosim.sim.clock.SimClock``
runs it in virtual time on simpy; ``WallClock`` here runs it on an asyncio
loop in wall time (optionally sped up), so the same objects make the same
decisions in both worlds. Events due at the same time run in (priority,
scheduling order) in both.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable, Protocol

# Ordering of events that fall on the same millisecond, as Dynamo's offline
# harness does it: pass completions first (router sees frees and first tokens),
# then arrivals are admitted and routed, then idle workers start passes.
PRIO_COMPLETION = 0
PRIO_ARRIVAL = 1
PRIO_PASS_START = 2


class Clock(Protocol):
    def now(self) -> float: ...

    def call_at(self, t_ms: float, fn: Callable[[], None], priority: int = PRIO_ARRIVAL) -> None: ...

    def next_time(self) -> float:
        """Time of the earliest pending event (inf when none)."""
        ...


class WallClock:
    """Milliseconds of wall time since ``start()`` × ``speed``, on an asyncio loop.

    A single dispatcher task sleeps until the earliest due event and then runs
    every event that is due, in (time, priority, order) — the order the
    simulator uses — so jitter of the loop never reorders events. While an
    event's callback runs, ``now()`` is that event's due time (its timestamp),
    so loop lateness does not leak into decisions; anywhere else (an HTTP
    handler, say) ``now()`` is the wall time.
    """

    def __init__(self, speed: float = 1.0):
        if speed <= 0:
            raise ValueError("WallClock speed must be > 0")
        self.speed = speed
        self._t0: float | None = None
        self._heap: list[tuple[float, int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self.max_lag_ms = 0.0  # worst lateness of an event, in clock ms (how busy the loop was)
        self._current: float | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._wake = asyncio.Event()

    def now(self) -> float:
        if self._current is not None:
            return self._current
        return self.wall_ms()

    def wall_ms(self) -> float:
        if self._t0 is None:
            return 0.0
        return (time.monotonic() - self._t0) * 1000.0 * self.speed

    def from_monotonic_ms(self, t_ms: float) -> float:
        """Clock time of a ``time.monotonic()`` reading in ms (e.g. when a token arrived)."""
        if self._t0 is None:
            return 0.0
        return (t_ms / 1000.0 - self._t0) * 1000.0 * self.speed

    def cancel_all(self) -> int:
        """Drop every pending event (a live run that must stop); returns how many were dropped."""
        n = len(self._heap)
        self._heap.clear()
        if self._wake is not None:
            self._wake.set()
        return n

    def call_at(self, t_ms: float, fn: Callable[[], None], priority: int = PRIO_ARRIVAL) -> None:
        heapq.heappush(self._heap, (t_ms, priority, next(self._seq), fn))
        if self._wake is not None:
            self._wake.set()

    def next_time(self) -> float:
        return self._heap[0][0] if self._heap else float("inf")

    async def run(self) -> None:
        """Dispatch events until none are left."""
        if self._t0 is None:
            self.start()
        assert self._wake is not None
        while self._heap:
            t_next = self._heap[0][0]
            delay_s = (t_next - self.wall_ms()) / (1000.0 * self.speed)
            if delay_s > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay_s)
                except asyncio.TimeoutError:
                    pass
                continue
            self.max_lag_ms = max(self.max_lag_ms, self.wall_ms() - t_next)
            _, _, _, fn = heapq.heappop(self._heap)
            self._current = t_next
            try:
                fn()
            finally:
                self._current = None
            await asyncio.sleep(0)
