"""The routing-policy interface: plain data in, a worker id out.

Policies import neither simpy nor aiohttp; they see a clock and requests, so
the same objects route in virtual time (simulator) and wall time (validate).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from dynosim.request import Request


class RoutingPolicy(Protocol):
    name: str

    def select(self, req: Request, workers: Sequence[int]) -> int:
        """Pick one of ``workers`` for ``req``."""

    def on_first_token(self, req: Request) -> None:
        """The request's prefill finished on ``req.worker``."""

    def on_complete(self, req: Request) -> None:
        """The request finished on ``req.worker`` and released its KV."""


class StatelessPolicy:
    """Base for policies that keep no per-request load state."""

    name = "stateless"

    def on_first_token(self, req: Request) -> None:
        return None

    def on_complete(self, req: Request) -> None:
        return None
