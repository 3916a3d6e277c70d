"""GPU budget: shrink target replicas that together would use more GPUs than allowed."""

from __future__ import annotations

import math


def fit_disagg(prefill: int, decode: int, gpus_prefill: int, gpus_decode: int, budget: int,
               min_replicas: int) -> tuple[int, int]:
    """Scale (prefill, decode) down in proportion until they fit; each pool keeps ``min_replicas``.

    As Dynamo's planner: with ``s = budget / total``, prefill gets
    ``max(min, min(floor((budget - min·gd)/gp), floor(p·s)))`` and decode what
    is left; a budget below the minimum deployment gives (0, 0).
    """
    total = prefill * gpus_prefill + decode * gpus_decode
    if total <= budget:
        return prefill, decode
    if min_replicas * (gpus_prefill + gpus_decode) > budget:
        return 0, 0
    s = budget / total
    p = max(min_replicas, min((budget - min_replicas * gpus_decode) // gpus_prefill, math.floor(prefill * s)))
    d = max(min_replicas, (budget - p * gpus_prefill) // gpus_decode)
    return p, d


def fit_agg(replicas: int, gpus: int, budget: int, min_replicas: int) -> int:
    """Aggregated pool: at most ``budget // gpus`` workers (0 when not even the minimum fits)."""
    cap = budget // gpus
    if cap < min_replicas:
        return 0
    return min(replicas, cap)
