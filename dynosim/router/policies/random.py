"""Uniformly random worker, from the router's seeded generator."""

from __future__ import annotations

from typing import ClassVar

from dynosim.request import Request
from dynosim.router.context import RoutingContext
from dynosim.router.policies.base import StatelessPolicy


class RandomPolicy(StatelessPolicy):
    name: ClassVar[str] = "random"

    def __init__(self, seed: int = 0, **_: object):
        pass

    def select(self, req: Request, ctx: RoutingContext) -> int:
        return ctx.workers[ctx.rng.randrange(len(ctx.workers))]
