"""Round-robin: the n-th routed request goes to candidate n mod N (as Dynamo's)."""

from __future__ import annotations

from typing import ClassVar

from dynosim.request import Request
from dynosim.router.context import RoutingContext
from dynosim.router.policies.base import StatelessPolicy


class RoundRobinPolicy(StatelessPolicy):
    name: ClassVar[str] = "round-robin"

    def __init__(self, seed: int = 0, **_: object):
        self._next = 0

    def select(self, req: Request, ctx: RoutingContext) -> int:
        workers = ctx.workers
        w = workers[self._next % len(workers)]
        self._next += 1
        return w
