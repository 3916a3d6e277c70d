"""Load-based policies on in-flight request counts (Dynamo's occupancy routers).

- ``least-loaded``: the worker with the fewest in-flight requests (ties at random);
- ``power-of-two-choices``: two distinct random workers, the less loaded one
  (the first drawn on ties);
- ``device-aware-weighted``: heterogeneous pools. Workers are CPU or accelerator
  ("cuda"); CPU workers only take overflow: the CPU group is chosen while its
  in-flight total is below ``accel_inflight × n_cpu / (ratio × n_accel)`` (integer
  division, ratio default 8), then the least-loaded worker of the group wins.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

from dynosim.request import Request
from dynosim.router.context import RoutingContext, argmin_random


class _LoadPolicy:
    name: ClassVar[str]
    uses_overlap: ClassVar[bool] = False
    uses_load: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ()

    def on_first_token(self, req: Request, now: float) -> None:
        return None

    def on_complete(self, req: Request, now: float) -> None:
        return None


class LeastLoadedPolicy(_LoadPolicy):
    name: ClassVar[str] = "least-loaded"

    def __init__(self, seed: int = 0, **_: object):
        pass

    def select(self, req: Request, ctx: RoutingContext) -> int:
        inflight = ctx.load.requests
        return argmin_random([inflight[w] for w in ctx.workers], ctx.workers, ctx.rng)


class PowerOfTwoPolicy(_LoadPolicy):
    name: ClassVar[str] = "power-of-two-choices"

    def __init__(self, seed: int = 0, **_: object):
        pass

    def select(self, req: Request, ctx: RoutingContext) -> int:
        workers = ctx.workers
        n = len(workers)
        if n == 1:
            return workers[0]
        i = ctx.rng.randrange(n)
        j = (i + 1 + ctx.rng.randrange(n - 1)) % n
        a, b = workers[i], workers[j]
        inflight = ctx.load.requests
        return a if inflight[a] <= inflight[b] else b


class DeviceAwareWeightedPolicy(_LoadPolicy):
    name: ClassVar[str] = "device-aware-weighted"
    options: ClassVar[tuple[str, ...]] = ("device_types", "cuda_to_cpu_ratio")

    def __init__(self, seed: int = 0, *, device_types: Sequence[str] | None = None, cuda_to_cpu_ratio: int = 8,
                 **_: object):
        if cuda_to_cpu_ratio < 1:
            raise ValueError("cuda_to_cpu_ratio must be >= 1")
        bad = [d for d in (device_types or ()) if d not in ("cpu", "cuda")]
        if bad:
            raise ValueError(f"device_types must be 'cpu' or 'cuda', got {bad}")
        self.device_types = list(device_types or ())
        self.ratio = cuda_to_cpu_ratio

    def _is_cpu(self, w: int) -> bool:
        return w < len(self.device_types) and self.device_types[w] == "cpu"

    def select(self, req: Request, ctx: RoutingContext) -> int:
        inflight = ctx.load.requests
        cpu = [w for w in ctx.workers if self._is_cpu(w)]
        accel = [w for w in ctx.workers if not self._is_cpu(w)]
        group = accel or cpu
        if cpu and accel:
            allowed = sum(inflight[w] for w in accel) * len(cpu) // (self.ratio * len(accel))
            group = cpu if sum(inflight[w] for w in cpu) < allowed else accel
        return argmin_random([inflight[w] for w in group], group, ctx.rng)
