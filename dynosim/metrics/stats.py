"""Distribution statistics with the conventions of Dynamo's replay report.

Percentiles are nearest-rank (``idx = round((n-1)·p/100)``, halves away from
zero) and the standard deviation is the population one, so figures compare
one-to-one with ``dynamo.replay`` reports. Weighted variants take run-length
encoded samples (value, count) so millions of equal token gaps cost one entry.
"""

from __future__ import annotations

import math

import numpy as np

PERCENTILES = (50, 75, 90, 95, 99)


def _nearest_rank_index(n: int, p: float) -> int:
    return int(math.floor((n - 1) * p / 100.0 + 0.5))


def distribution(values, weights=None) -> dict[str, float]:
    """mean, std, min, max and p50…p99 of ``values`` (optionally with integer counts)."""
    v = np.asarray(values, dtype=float)
    if weights is None:
        w = None
    else:
        w = np.asarray(weights, dtype=np.int64)
        keep = w > 0
        v, w = v[keep], w[keep]
    if v.size == 0:
        return {k: float("nan") for k in ("mean", "std", "min", "max", *(f"p{p}" for p in PERCENTILES))}
    order = np.argsort(v)  # equal values may come in any order: they are equal
    v = v[order]
    if w is None:
        n = v.size
        mean = float(v.mean())
        std = float(v.std())
        pick = lambda idx: float(v[idx])  # noqa: E731
    else:
        w = w[order]
        n = int(w.sum())
        mean = float(np.dot(v, w) / n)
        std = float(math.sqrt(max(0.0, np.dot(w, (v - mean) ** 2) / n)))
        cum = np.cumsum(w)
        pick = lambda idx: float(v[int(np.searchsorted(cum, idx, side="right"))])  # noqa: E731
    out = {"mean": mean, "std": std, "min": float(v[0]), "max": float(v[-1])}
    for p in PERCENTILES:
        out[f"p{p}"] = pick(_nearest_rank_index(n, p))
    return out
