"""Direct: the request names its worker (``worker_id`` / ``backend_instance_id`` hint)."""

from __future__ import annotations

from typing import ClassVar

from dynosim.request import Request
from dynosim.router.context import RoutingContext
from dynosim.router.policies.base import StatelessPolicy

HINT_KEYS = ("worker_id", "backend_instance_id")


class DirectPolicy(StatelessPolicy):
    name: ClassVar[str] = "direct"

    def __init__(self, seed: int = 0, **_: object):
        pass

    def select(self, req: Request, ctx: RoutingContext) -> int:
        for key in HINT_KEYS:
            if key in req.hints:
                w = req.hints[key]
                break
        else:
            raise ValueError(f"router mode 'direct': request at trace line {req.line} has no "
                             f"{' / '.join(HINT_KEYS)} field")
        if not isinstance(w, int) or isinstance(w, bool) or w not in ctx.workers:
            raise ValueError(f"router mode 'direct': trace line {req.line} names worker {w!r}, "
                             f"routable workers are {list(ctx.workers)}")
        return w
