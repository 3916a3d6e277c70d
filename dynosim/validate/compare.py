"""Measured vs predicted, per metric, with errors and a verdict against tolerances.

Relative error = (predicted − measured) / measured, so +10% means the
simulator predicts 10% more than was measured. Prefix reuse is a ratio
already, so it is compared by absolute difference. Which metrics gate the
exit status is a choice (``gate``); the others are reported only.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dynosim.metrics.catalog import BY_KEY, VALIDATE_GATE, VALIDATED, Metric, get

# the metrics compared, in the table's order, and the ones gating the exit status by default: the metric
# catalogue's (keys as in sweep rows; labels with units)
METRICS: tuple[Metric, ...] = tuple(BY_KEY[k] for k in VALIDATED)
METRIC_KEYS = VALIDATED
DEFAULT_GATE = VALIDATE_GATE


def compare(measured: dict, predicted: dict, *, tolerance: float = 0.10, reuse_tolerance: float = 0.02,
            tolerances: dict[str, float] | None = None, gate: tuple[str, ...] = DEFAULT_GATE) -> pd.DataFrame:
    """One row per metric: measured, predicted, error, tolerance, gated, ok."""
    unknown = [k for k in (*gate, *(tolerances or {})) if k not in METRIC_KEYS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_KEYS)}")
    rows = []
    for m in METRICS:
        meas, pred = get(m.key, measured), get(m.key, predicted)
        tol = (tolerances or {}).get(m.key, reuse_tolerance if m.absolute else tolerance)
        if m.absolute:
            err = pred - meas
        else:
            err = (pred - meas) / meas if meas not in (0.0,) and math.isfinite(meas) else math.nan
        ok = math.isfinite(err) and abs(err) <= tol
        rows.append({"metric": m.key, "label": m.axis_label, "measured": meas, "predicted": pred,
                     "error": err, "error_kind": "abs" if m.absolute else "rel", "tolerance": tol,
                     "gated": m.key in gate, "ok": bool(ok)})
    return pd.DataFrame(rows)


def verdict(table: pd.DataFrame) -> bool:
    """True when every gated metric is within its tolerance."""
    gated = table[table["gated"]]
    return bool(gated["ok"].all())


def format_error(row) -> str:
    e = row["error"]
    if not math.isfinite(e):
        return "n/a"
    return f"{e:+.4f}" if row["error_kind"] == "abs" else f"{100 * e:+.1f}%"


def plot(table: pd.DataFrame, measured_requests: pd.DataFrame, predicted_requests: pd.DataFrame,
         path: Path, title: str = "") -> Path:
    """Relative errors per metric, and TTFT / per-request ITL CDFs measured vs predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    rel = table[table["error_kind"] == "rel"]
    colors = ["tab:green" if ok else "tab:red" for ok in rel["ok"]]
    axes[0].barh(rel["label"], 100 * rel["error"].fillna(0.0), color=colors)
    for tol in (rel["tolerance"].iloc[0] if len(rel) else 0.1,):
        axes[0].axvline(100 * tol, ls="--", c="grey")
        axes[0].axvline(-100 * tol, ls="--", c="grey")
    axes[0].set_xlabel("predicted vs measured (%)")
    axes[0].invert_yaxis()
    for ax, col, name in ((axes[1], "ttft_ms", "TTFT (ms)"), (axes[2], "itl_ms", "per-request ITL (ms)")):
        for df, label in ((measured_requests, "measured"), (predicted_requests, "predicted")):
            v = np.sort(df.loc[df["status"] == "done", col].dropna().to_numpy())
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
        ax.set_xlabel(name)
        ax.set_ylabel("CDF")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
