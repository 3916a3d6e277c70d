"""Virtual-time ``Clock`` on simpy (the wall-time one is ``dynosim.clock.WallClock``)."""

from __future__ import annotations

from heapq import heappush
from typing import Callable

import simpy
from simpy.core import Environment

from dynosim.clock import PRIO_ARRIVAL


class _Callback(simpy.Event):
    """A pre-triggered simpy event that runs one function when popped."""

    __slots__ = ()

    def __init__(self, env: Environment, fn: Callable[[], None]):
        # Bypass Event.__init__'s bookkeeping: this event is born triggered.
        self.env = env
        self.callbacks = [lambda _ev: fn()]
        self._ok = True
        self._value = None
        self._defused = False


class SimClock:
    """Virtual-time clock in milliseconds backed by a simpy environment."""

    def __init__(self, env: Environment | None = None):
        self.env = env if env is not None else simpy.Environment()

    def now(self) -> float:
        return self.env.now

    def call_at(self, t_ms: float, fn: Callable[[], None], priority: int = PRIO_ARRIVAL) -> None:
        env = self.env
        if t_ms < env.now:
            raise ValueError(f"cannot schedule in the past: t={t_ms} < now={env.now}")
        # Queue at exactly t_ms. env.schedule() takes a delay and fires at now + (t - now),
        # which can differ from t by an ulp; the next call_at(t) would then be "in the past".
        heappush(env._queue, (t_ms, priority, next(env._eid), _Callback(env, fn)))

    def next_time(self) -> float:
        """Time of the earliest pending event (inf when none)."""
        q = self.env._queue
        return q[0][0] if q else float("inf")

    def run(self) -> None:
        self.env.run()
