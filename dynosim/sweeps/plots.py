"""The sweep's Pareto plot: every point, the frontier, agg and disagg in their own colours."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLORS = {"agg": "C0", "disagg": "C1"}


def plot_pareto(points: pd.DataFrame, front: pd.DataFrame, path: str | Path, *, x: str = "tps_user_mean",
                y: str = "output_tps_per_gpu", title: str = "") -> Path:
    # a Figure without pyplot: no global backend switch (a notebook keeps its inline plots)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6))
    ax = fig.subplots()
    for mode, g in points.groupby("mode"):
        ax.errorbar(g[x], g[y], xerr=g.get(f"{x}_ci"), yerr=g.get(f"{y}_ci"), fmt="o", alpha=0.45,
                    color=COLORS.get(mode, "C2"), label=f"{mode} ({len(g)} points)", markersize=5)
    if len(front):
        ax.plot(front[x], front[y], "-", color="black", linewidth=1.2, label="Pareto frontier")
        for i, (_, r) in enumerate(front.iterrows()):
            ax.scatter([r[x]], [r[y]], s=60, facecolors="none", edgecolors=COLORS.get(r["mode"], "C2"),
                       linewidths=1.5)
            load = f"c{r['load']:g}" if r.get("load_kind") == "concurrency" else f"×{r['load']:g}"
            ax.annotate(f"{r['config']} {load}", (r[x], r[y]), textcoords="offset points",
                        xytext=(4, 4 - 12 * (i % 3)),   # staggered: neighbours on the front often sit close
                        fontsize=7)
    ax.set_xlabel({"tps_user_mean": "tokens/s/user (mean)"}.get(x, x))
    ax.set_ylabel({"output_tps_per_gpu": "output tokens/s/GPU"}.get(y, y))
    ax.set_title(title or "dynosim sweep: throughput per GPU vs speed per user")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
