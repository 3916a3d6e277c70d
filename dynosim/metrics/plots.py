"""Plots of a run's outputs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_replicas(timeline: pd.DataFrame, path: str | Path, end_s: float | None = None) -> Path:
    """Step plot per pool: routable replicas (solid) and GPUs held incl. starting and draining (dashed)."""
    # a Figure without pyplot: no global backend switch (a notebook keeps its inline plots)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    end = end_s if end_s is not None else float(timeline["time_s"].max())
    for i, (pool, rows) in enumerate(timeline.groupby("pool", sort=False)):
        # the last row at any instant is the state after it
        rows = rows.groupby("time_s", sort=True).tail(1)
        t = list(rows["time_s"]) + [max(end, float(rows["time_s"].iloc[-1]))]
        ready = list(rows["ready"]) + [int(rows["ready"].iloc[-1])]
        held = list(rows["starting"] + rows["ready"] + rows["draining"]) + [
            int((rows["starting"] + rows["ready"] + rows["draining"]).iloc[-1])]
        color = f"C{i}"
        ax.step(t, ready, where="post", color=color, label=f"{pool}: routable")
        ax.step(t, held, where="post", color=color, linestyle="--", alpha=0.6, label=f"{pool}: held")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("workers")
    ax.set_title("planner: replicas per pool")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
