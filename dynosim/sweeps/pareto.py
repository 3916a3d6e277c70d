"""Pareto frontiers over sweep results, and confidence intervals over repeats."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynosim.metrics.catalog import AGGREGATED, SWEEP_ROW

METRICS = AGGREGATED     # the figures averaged over seeds (the metric catalogue's view)


def aggregate(results: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per point over its seeds: the mean of each metric, and ``<metric>_ci`` the half-width of its
    Student-t confidence interval (0 with one seed)."""
    from scipy.special import stdtrit    # Student-t quantile; scipy.stats takes seconds to import

    # a point's labels: everything a row carries that is not a measurement, its id or its seed
    keys = [c for c in results.columns if c not in SWEEP_ROW and c not in ("id", "seed", "wall_s")]
    rows = []
    for key, g in results.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        n = len(g)
        row["repeats"] = n
        for m in METRICS:
            if m not in g:
                continue
            v = g[m].to_numpy(dtype=float)
            row[m] = float(np.mean(v))
            row[f"{m}_ci"] = float(stdtrit(n - 1, 0.5 + confidence / 2) * np.std(v, ddof=1) / np.sqrt(n)) \
                if n > 1 else 0.0
        row["failed"] = int(g["failed"].sum()) if "failed" in g else 0
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point dominates (at least as high on both, higher on one); exact duplicates are all
    kept; non-finite points never are."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    out = np.zeros(len(x), bool)
    xs, ys = x[ok], y[ok]
    for k in np.flatnonzero(ok):
        dominated = (xs >= x[k]) & (ys >= y[k]) & ((xs > x[k]) | (ys > y[k]))
        out[k] = not dominated.any()
    return out


def frontier(df: pd.DataFrame, x: str = "tps_user_mean", y: str = "output_tps_per_gpu") -> pd.DataFrame:
    """The Pareto-optimal rows of ``df`` on (x, y), sorted by x."""
    if df.empty:
        return df
    m = pareto_mask(df[x].to_numpy(), df[y].to_numpy())
    return df[m].sort_values(x).reset_index(drop=True)
