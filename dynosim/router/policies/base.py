"""The routing-policy interface: plain data in, a worker id out.

Policies import neither simpy nor aiohttp; they see a ``RoutingContext``
(candidates, in-flight load, overlap, RNG, the clock's ``now``) and lifecycle
signals with times, so the same objects route in virtual time (simulator)
and wall time (validate).
"""

from __future__ import annotations

from typing import Protocol

from dynosim.request import Request
from dynosim.router.context import RoutingContext


class RoutingPolicy(Protocol):
    name: str
    uses_overlap: bool  # the router must keep a KV indexer for it
    # the keyword options the constructor reads (router parameters and `--router-option` keys); anything
    # else it is given has no effect, so callers refuse it instead of dropping it silently
    options: tuple[str, ...]

    def select(self, req: Request, ctx: RoutingContext) -> int:
        """Pick one of ``ctx.workers`` for ``req``."""

    def on_first_token(self, req: Request, now: float) -> None:
        """The request's prefill finished on ``req.worker``."""

    def on_complete(self, req: Request, now: float) -> None:
        """The request finished (or failed) on ``req.worker``."""


class StatelessPolicy:
    """Base for policies that learn nothing from request lifecycles."""

    name = "stateless"
    uses_overlap = False
    options: tuple[str, ...] = ()

    def on_first_token(self, req: Request, now: float) -> None:
        return None

    def on_complete(self, req: Request, now: float) -> None:
        return None
