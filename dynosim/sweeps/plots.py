"""The sweep's frontier plots (matplotlib, headless).

Per load level (the load is the operator's input, not a design choice) two panels: output tokens/s/GPU
against tokens/s/user, and against p90 TTFT. Colour is the tensor-parallel degree, the marker the mode
(agg ●, disagg ■); points that miss an objective are hollow and faded; objectives are drawn as dashed
lines; frontier points are named inside the axes. The cross-load view colours by load instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dynosim.metrics.catalog import label
from dynosim.sweeps.objectives import Objectives
from dynosim.sweeps.pareto import frontier

MARKERS = {"agg": "o", "disagg": "s"}
X_USER, X_TTFT, Y = "tps_user_mean", "ttft_p90", "output_tps_per_gpu"
LABELS = {k: label(k, unit=True) for k in (X_USER, X_TTFT, Y)}     # the metric catalogue's labels


def _figure(ncols: int, width: float = 13.0):
    # a Figure without pyplot: no global backend switch (a notebook keeps its inline plots)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 5.6))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _label_inside(ax, x: float, y: float, text: str) -> None:
    """Annotate a point with the text running towards the middle of the axes, so it stays inside them."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    tx = (np.log10(x) - np.log10(x0)) / (np.log10(x1) - np.log10(x0)) if ax.get_xscale() == "log" \
        else (x - x0) / (x1 - x0)
    ty = (y - y0) / (y1 - y0)
    right, top = tx > 0.55, ty > 0.6
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(-16 if right else 16, -16 if top else 16),
                ha="right" if right else "left", va="top" if top else "bottom", fontsize=7, annotation_clip=True,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
                arrowprops={"arrowstyle": "-", "linewidth": 0.6, "color": "0.3", "shrinkA": 0, "shrinkB": 3})


def _objective_lines(ax, x: str, obj: Objectives) -> None:
    """The objective on this panel's x axis as a dashed line, its failing side lightly shaded; the limits are
    frozen afterwards so labels can be placed inside them."""
    itl = obj.itl_mean_ms or obj.itl_p90_ms
    line = None
    if x == X_TTFT and obj.ttft_p90_ms is not None:
        line, side = obj.ttft_p90_ms, "right"
        label = f"TTFT p90 ≤ {obj.ttft_p90_ms:,.0f} ms"
    elif x == X_USER and itl is not None:
        line, side = 1000.0 / itl, "left"
        label = f"ITL {itl:g} ms ≈ {1000.0 / itl:.0f} tok/s/user"
    if line is not None:
        ax.axvline(line, color="crimson", linestyle="--", linewidth=1.1, label=label)
    ax.autoscale_view()
    x0, x1 = ax.get_xlim()
    ax.set_xlim(x0, x1)
    if line is not None:
        ax.axvspan(line, x1, color="crimson", alpha=0.05) if side == "right" else \
            ax.axvspan(x0, line, color="crimson", alpha=0.05)


def _panel(ax, pts: pd.DataFrame, ok: pd.Series, x: str, obj: Objectives, colors: dict, color_key: str,
           color_label, name=lambda r: str(r["config"])) -> int:
    """One scatter panel; returns the number of frontier points drawn."""
    for (mode, ck), g in pts.groupby(["mode", color_key], sort=True):
        good = g[ok.loc[g.index]]
        bad = g[~ok.loc[g.index]]
        kw = {"marker": MARKERS.get(mode, "^"), "linestyle": "none"}
        if len(good):
            ax.errorbar(good[x], good[Y], xerr=good.get(f"{x}_ci"), yerr=good.get(f"{Y}_ci"), color=colors[ck],
                        markersize=7, alpha=0.9, label=f"{mode} {color_label(ck)}", **kw)
        if len(bad):
            ax.plot(bad[x], bad[Y], markerfacecolor="none", markeredgecolor=colors[ck], markersize=7, alpha=0.35,
                    **kw)
    if x == X_TTFT:
        ax.set_xscale("log")
    ax.margins(0.08)
    _objective_lines(ax, x, obj)
    feasible = pts[ok]
    front = frontier(feasible.assign(_neg=-feasible[X_TTFT]), x="_neg", y=Y) if x == X_TTFT \
        else frontier(feasible, x=x, y=Y)
    if len(front):
        front = front.sort_values(x)
        ax.plot(front[x], front[Y], "-", color="black", linewidth=1.0, alpha=0.7, label="frontier (meets all)")
        for _, r in front.iterrows():
            _label_inside(ax, float(r[x]), float(r[Y]), name(r))
    ax.set_xlabel(LABELS[x])
    ax.set_ylabel(LABELS[Y])
    ax.grid(alpha=0.3, which="both")
    return len(front)


def _legend(fig, axes) -> None:
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    handles.append(Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="grey",
                          alpha=0.5))
    labels.append("misses an objective (hollow)")
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)


def _tp_colors(points: pd.DataFrame) -> dict:
    tps = sorted(points["tp"].unique()) if "tp" in points else [1]
    return {tp: f"C{i % 10}" for i, tp in enumerate(tps)}


def plot_load(points: pd.DataFrame, ok: pd.Series, obj: Objectives, path: str | Path, *, title: str) -> Path:
    """``load_figure`` saved as a PNG."""
    out = Path(path)
    load_figure(points, ok, obj, title=title).savefig(out, dpi=100)
    return out


def plot_cross_load(points: pd.DataFrame, ok: pd.Series, obj: Objectives, path: str | Path, *,
                    title: str) -> Path:
    """``cross_load_figure`` saved as a PNG."""
    out = Path(path)
    cross_load_figure(points, ok, obj, title=title).savefig(out, dpi=100)
    return out


def load_figure(points: pd.DataFrame, ok: pd.Series, obj: Objectives, *, title: str):
    """The frontiers at one load level: throughput per GPU vs speed per user, and vs p90 TTFT (a Figure;
    ``ok`` marks the points meeting every objective)."""
    fig, axes = _figure(2)
    pts = points.assign(tp=points["tp"] if "tp" in points else 1)
    colors = _tp_colors(pts)
    if pts.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes)
        n_front = 0
    else:
        n_front = _panel(axes[0], pts, ok, X_USER, obj, colors, "tp", lambda tp: f"TP{tp}")
        _panel(axes[1], pts, ok, X_TTFT, obj, colors, "tp", lambda tp: f"TP{tp}")
        _legend(fig, axes)
    n_ok = int(ok.sum())
    fig.suptitle(f"{title}: {len(pts)} deployments, {n_ok} meet {obj.text()}"
                 + (f"; frontier {n_front}" if n_ok else " (none does)"), fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def cross_load_figure(points: pd.DataFrame, ok: pd.Series, obj: Objectives, *, title: str):
    """Every deployment at every load, coloured by load: how far each load moves the frontier (a Figure)."""
    fig, axes = _figure(2)
    loads = sorted(points["load"].unique()) if len(points) else []
    kind = points["load_kind"].iloc[0] if len(points) and "load_kind" in points else "rate"
    cmap = __import__("matplotlib").colormaps["viridis"]
    colors = {ld: cmap(i / max(len(loads) - 1, 1) * 0.9) for i, ld in enumerate(loads)}

    def name(ld):
        return f"c{ld:g}" if kind == "concurrency" else f"×{ld:g}"
    if points.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes)
    else:
        def label(r):
            return f"{r['config']} {name(r['load'])}"
        _panel(axes[0], points, ok, X_USER, obj, colors, "load", name, label)
        _panel(axes[1], points, ok, X_TTFT, obj, colors, "load", name, label)
        _legend(fig, axes)
    fig.suptitle(f"{title}: {len(points)} points over {len(loads)} loads, {int(ok.sum())} meet {obj.text()} "
                 "(per-load plots: pareto_<load>.png)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def load_file(load: float, kind: str) -> str:
    """The per-load plot's file name, e.g. pareto_x2.png or pareto_c16.png."""
    return f"pareto_{'c' if kind == 'concurrency' else 'x'}{load:g}.png"
