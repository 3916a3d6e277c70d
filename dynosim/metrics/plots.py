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



POOL_COLOURS = {"agg": "C0", "prefill": "C3", "decode": "C2"}
# (column, title, y label, how to scale) per panel; "rate": per interval → per second, "kv": % of capacity
TIMELINE_PANELS = [
    ("running", "running requests", "requests", None),
    ("waiting", "waiting requests (engine queue)", "requests", None),
    ("router_queue", "queued at the router", "requests", None),
    ("kv_used_blocks", "KV blocks in use", "% of KV capacity", "kv"),
    ("kv_cached_blocks", "KV blocks cached (free, evictable)", "% of KV capacity", "kv"),
    ("transfers_in_flight", "KV transfers in flight", "transfers", None),
    ("tokens_scheduled", "tokens scheduled", "tokens/s", "rate"),
    ("passes", "passes run", "passes/s", "rate"),
    ("replicas", "replicas (routable workers)", "workers", None),
]
POOL_WIDE = ("router_queue", "transfers_in_flight", "replicas")
NO_DATA = {"router_queue": "the router does not queue\n(--router-queue-threshold)",
           "transfers_in_flight": "no KV hand-offs\n(aggregated serving)"}


def plot_timeline(timeline: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Small multiples of a run's timeline: one panel per quantity, one thin line per worker coloured by its
    pool with the pool's mean on top (pool-wide quantities: one line per pool), so imbalance and
    saturation show at a glance even with dozens of workers."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from dynosim.metrics.timeline import interval_s

    dt = interval_s(timeline)
    fig = Figure(figsize=(15, 9.5))
    axes = fig.subplots(3, 3, sharex=True).ravel()
    workers = timeline[timeline["worker"] >= 0]
    pool_rows = timeline[timeline["worker"] < 0]
    n_workers = {p: int(workers.loc[workers["pool"] == p, "worker"].nunique())
                 for p in dict.fromkeys(timeline["pool"])}
    pools = sorted(n_workers, key=lambda p: -n_workers[p])   # the smaller pool drawn last, on top
    most = max(n_workers.values(), default=1)
    lw, alpha = (1.0, 0.6) if most <= 4 else (0.7, 0.4) if most <= 12 else (0.5, 0.25)
    capacity = {p: workers.loc[workers["pool"] == p, "kv_total_blocks"].max() for p in pools}
    for ax, (col, name, unit, scale) in zip(axes, TIMELINE_PANELS):
        drawn = False
        for p in pools:
            colour = POOL_COLOURS.get(p, "C7")
            if col in POOL_WIDE:
                rows = pool_rows[pool_rows["pool"] == p]
                if rows[col].notna().any():
                    if col == "replicas":
                        ax.step(rows["time_s"], rows[col], where="post", color=colour, lw=1.8)
                    else:
                        ax.plot(rows["time_s"], rows[col], color=colour, lw=1.4)
                    drawn = True
                continue
            rows = workers[workers["pool"] == p]
            if not len(rows):
                continue
            wide = rows.pivot(index="time_s", columns="worker", values=col)
            values = wide.to_numpy()
            if scale == "rate":
                values = values / dt
            elif scale == "kv":
                values = 100.0 * values / rows.pivot(index="time_s", columns="worker",
                                                      values="kv_total_blocks").to_numpy()
            t = wide.index.to_numpy()
            ax.plot(t, values, color=colour, lw=lw, alpha=alpha)
            if values.shape[1] > 1:
                with np.errstate(all="ignore"):
                    mean = np.nanmean(values, axis=1)
                ax.plot(t, mean, color=colour, lw=2.2)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, NO_DATA.get(col, "no data"), transform=ax.transAxes, ha="center", va="center",
                    color="0.4", fontsize=9)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if not drawn:
            ax.set_yticks([])
        elif scale is None:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[-3:]:
        ax.set_xlabel("time since first arrival (s)")
    handles = [Line2D([], [], color=POOL_COLOURS.get(p, "C7"), lw=2.2,
                      label=f"{p}: {n_workers[p]} worker{'s' if n_workers[p] != 1 else ''}"
                            + (f" × {capacity[p]:,.0f} KV blocks" if np.isfinite(capacity[p]) else ""))
               for p in dict.fromkeys(timeline["pool"])]
    fig.suptitle(f"{title + ' — ' if title else ''}timeline sampled every {dt:.3g} s "
                 "(thin: one line per worker; thick: pool mean)", x=0.01, y=0.995, ha="left", fontsize=11)
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.005, 0.965), ncol=len(handles), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.945))
    out = Path(path)
    fig.savefig(out, dpi=100)
    return out
