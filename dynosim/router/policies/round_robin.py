"""Round-robin: the n-th routed request goes to worker n mod N (as Dynamo's)."""

from __future__ import annotations

from typing import Sequence

from dynosim.request import Request
from dynosim.router.policies.base import StatelessPolicy


class RoundRobinPolicy(StatelessPolicy):
    name = "round-robin"

    def __init__(self, seed: int = 0):
        self._next = 0

    def select(self, req: Request, workers: Sequence[int]) -> int:
        w = workers[self._next % len(workers)]
        self._next += 1
        return w
