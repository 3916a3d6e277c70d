"""The routing-policy interface: plain data in, a worker id out.

Policies import neither simpy nor aiohttp; they see a ``RoutingContext``
(candidates, in-flight load, overlap, RNG, the clock's ``now``) and lifecycle
signals with times, so the same objects route in virtual time (simulator)
and wall time (validate).

Every policy class declares, as class attributes, what the router must keep
for it and which options it reads (``RoutingPolicy``); the registry
(``POLICIES``) holds the classes, so ``policy_options`` and the router read
the declarations, never a guessed default.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from dynosim.request import Request
from dynosim.router.context import RoutingContext


class RoutingPolicy(Protocol):
    name: ClassVar[str]
    # the router must keep a KV indexer for it (the overlap of a request with each worker's cache)
    uses_overlap: ClassVar[bool]
    # the router must track each worker's in-flight load (requests, prefill tokens, active blocks) for it
    uses_load: ClassVar[bool]
    # the keyword options the constructor reads (router parameters and `--router-option` keys); anything
    # else it is given has no effect, so callers refuse it instead of dropping it silently
    options: ClassVar[tuple[str, ...]]

    def __init__(self, seed: int = 0, **options: Any) -> None: ...

    def select(self, req: Request, ctx: RoutingContext) -> int:
        """Pick one of ``ctx.workers`` for ``req``."""

    def on_first_token(self, req: Request, now: float) -> None:
        """The request's prefill finished on ``req.worker``."""

    def on_complete(self, req: Request, now: float) -> None:
        """The request finished (or failed) on ``req.worker``."""


class StatelessPolicy:
    """Base for policies that learn nothing from request lifecycles (and need no indexer, no load)."""

    name: ClassVar[str] = "stateless"
    uses_overlap: ClassVar[bool] = False
    uses_load: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()

    def on_first_token(self, req: Request, now: float) -> None:
        return None

    def on_complete(self, req: Request, now: float) -> None:
        return None
