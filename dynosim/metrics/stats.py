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
    """mean, std, min, max and p50…p99 of ``values`` (optionally with integer counts).

    The weighted path never materialises the expanded sample and keeps at most
    one sorted permutation and one cumulative-count array besides its inputs
    (millions of token gaps stay cheap in memory).
    """
    v = np.asarray(values, dtype=float)
    if weights is None:
        w = None
    else:
        w = np.asarray(weights)
        if w.size and w.min() <= 0:
            keep = w > 0
            v, w = v[keep], w[keep]
    if v.size == 0:
        return {k: float("nan") for k in ("mean", "std", "min", "max", *(f"p{p}" for p in PERCENTILES))}
    if w is None:
        v = np.sort(v)
        n = v.size
        mean = float(v.mean())
        std = float(v.std())
        pick = lambda idx: float(v[idx])  # noqa: E731
        lo, hi = float(v[0]), float(v[-1])
    else:
        n = int(w.sum(dtype=np.int64))
        mean = float(np.dot(v, w) / n)
        dev = v - mean
        dev *= dev
        std = float(math.sqrt(max(0.0, float(np.dot(dev, w)) / n)))
        del dev
        order = np.argsort(v)  # equal values may come in any order: they are equal
        cum = np.cumsum(w[order], dtype=np.int64)
        pick = lambda idx: float(v[order[int(np.searchsorted(cum, idx, side="right"))]])  # noqa: E731
        lo, hi = float(v[order[0]]), float(v[order[-1]])
    out = {"mean": mean, "std": std, "min": lo, "max": hi}
    for p in PERCENTILES:
        out[f"p{p}"] = pick(_nearest_rank_index(n, p))
    return out
