"""The report's Plotly figures: a sweep's frontier per load, a run's latency CDFs, timeline and replicas.

Each builder takes plain frames and returns a ``plotly.graph_objects.Figure`` (or None when its data is
absent), so a notebook can show the same figures. Long series are thinned here (``MAX_POINTS`` per line) so
a report stays a few MB beyond Plotly's own JavaScript.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dynosim.metrics.catalog import BY_KEY, label as metric_label
from dynosim.sweeps.pareto import pareto_mask

MAX_POINTS = 1000          # per line in a timeline, per curve in a CDF
MAX_SCATTER = 3000         # requests drawn in the TTFT-over-time scatter
FADED = 0.25               # marker opacity of a point that misses an objective
MODE_SYMBOLS = {"agg": "circle", "disagg": "square"}
OTHER_SYMBOLS = ("diamond", "triangle-up", "cross", "x", "star")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
# label, unit and decimals of each sweep figure the hover shows (points.csv column names; the metric catalogue's)
POINT_FIGURES = {k: (BY_KEY[k].short or BY_KEY[k].label, f" {BY_KEY[k].unit}" if BY_KEY[k].unit else "",
                     BY_KEY[k].decimals)
                 for k in ("output_tps_per_gpu", "tps_user_mean", "ttft_p50", "ttft_p90", "itl_mean", "itl_p90",
                           "e2e_p90", "goodput_rps", "slo_attainment")}
OBJECTIVE_LABELS = {f"{k}_ms": metric_label(k) for k in ("ttft_p90", "itl_mean", "itl_p90", "e2e_p90")}
BASE_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), font=dict(size=12),
                   hoverlabel=dict(align="left"))


def num(v, nd: int = 1) -> str:
    """A number for people: thousands separators, ``-`` for missing."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-" if v is None else str(v)
    if not math.isfinite(f):
        return "-"
    return f"{f:,.{nd}f}"


def load_label(kind: str, load: float, rate_rps: float | None = None) -> str:
    """How a load level reads: ``2× arrival rate (4.6 req/s)`` or ``concurrency 32``."""
    if kind == "concurrency":
        return f"concurrency {load:g}"
    extra = f" ({rate_rps:,.2f} req/s)" if rate_rps is not None and math.isfinite(rate_rps) else ""
    return f"{load:g}× arrival rate{extra}"


def load_levels(points: pd.DataFrame) -> list[tuple[str, float]]:
    """The sweep's load levels, (kind, load), rates first, each ascending."""
    keys = {(str(k), float(v)) for k, v in zip(points["load_kind"], points["load"])}
    return sorted(keys, key=lambda kl: (kl[0] != "rate", kl[0], kl[1]))


def meets_mask(points: pd.DataFrame, objectives: dict[str, float]) -> np.ndarray:
    """Which points meet the objectives: ``meets_slo`` when the CSV has it, else judged here from the
    objectives (and no failed requests)."""
    if "meets_slo" in points:
        return points["meets_slo"].astype(str).str.lower().isin(("true", "1", "1.0")).to_numpy()
    ok = np.ones(len(points), bool)
    for obj, col in (("ttft_p90_ms", "ttft_p90"), ("itl_mean_ms", "itl_mean"), ("itl_p90_ms", "itl_p90"),
                     ("e2e_p90_ms", "e2e_p90")):
        if obj in objectives and col in points:
            ok &= points[col].to_numpy(float) <= objectives[obj]
    if "failed" in points:
        ok &= points["failed"].fillna(0).to_numpy() == 0
    return ok


def point_hover(row: pd.Series, label: str, meets: bool) -> str:
    """One point's hover: the deployment, then each figure with its ± interval (95%) when seeds repeat."""
    lines = [f"<b>{row['config']}</b>"]
    shape = []
    if "mode" in row and row["mode"] == row["mode"]:
        shape.append(str(row["mode"]))
    if "tp" in row and row["tp"] == row["tp"]:
        shape.append(f"TP{int(row['tp'])}")
    if row.get("prefill", 0) and row.get("decode", 0):
        shape.append(f"{int(row['prefill'])}P+{int(row['decode'])}D")
    elif "workers" in row and row["workers"] == row["workers"]:
        shape.append(f"{int(row['workers'])} workers")
    if "router" in row and row["router"] == row["router"]:
        shape.append(f"router {row['router']}")
    if shape:
        lines.append(" · ".join(shape))
    lines.append(f"load: {label}")
    repeats = int(row["repeats"]) if "repeats" in row and row["repeats"] == row["repeats"] else 1
    for col, (name, unit, nd) in POINT_FIGURES.items():
        if col not in row or row[col] != row[col]:
            continue
        ci = row.get(f"{col}_ci")
        pm = f" ± {num(ci, nd)}" if repeats > 1 and ci is not None and ci == ci else ""
        lines.append(f"{name}: {num(row[col], nd)}{pm}{unit}")
    lines.append(f"{repeats} seeds (± is a 95% interval)" if repeats > 1 else "1 seed (no interval)")
    failed = int(row["failed"]) if "failed" in row and row["failed"] == row["failed"] else 0
    verdict = "meets the objectives" if meets else "misses an objective"
    lines.append(verdict + (f" · {failed} failed requests" if failed else ""))
    return "<br>".join(lines)


def frontier_figure(points: pd.DataFrame, objectives: dict[str, float] | None = None, *,
                    initial: tuple[str, float] | None = None,
                    best: dict[tuple[str, float], str] | None = None,
                    rates: dict[tuple[str, float], float] | None = None) -> go.Figure | None:
    """tokens/s/GPU vs tokens/s/user (left) and vs TTFT p90 (right), one load level at a time (buttons or a
    dropdown choose it). Marker = agg/disagg, colour = TP, faded = misses an objective, dashed grey = the
    frontier of the points that meet them, ring = the recommended deployment, dotted = the objectives."""
    objectives = objectives or {}
    best = best or {}
    rates = rates or {}
    panels = [c for c in ("tps_user_mean", "ttft_p90") if c in points and points[c].notna().any()]
    if not panels or points.empty:
        return None
    titles = {"tps_user_mean": "tokens/s/GPU vs tokens/s/user", "ttft_p90": "tokens/s/GPU vs TTFT p90"}
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[titles[p] for p in panels],
                        horizontal_spacing=0.08)
    pts = points.reset_index(drop=True)
    meets = meets_mask(pts, objectives)
    modes = sorted(pts["mode"].dropna().astype(str).unique()) if "mode" in pts else ["-"]
    extra = [m for m in modes if m not in MODE_SYMBOLS]
    symbols = {**MODE_SYMBOLS, **{m: OTHER_SYMBOLS[i % len(OTHER_SYMBOLS)] for i, m in enumerate(extra)}}
    tps = sorted(int(t) for t in pts["tp"].dropna().unique()) if "tp" in pts else [1]
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tps)}
    levels = load_levels(pts)
    if initial not in levels:
        initial = levels[0]
    owner: list[tuple[str, float]] = []       # the load level each trace belongs to
    for level in levels:
        kind, load = level
        label = load_label(kind, load, rates.get(level))
        at = (pts["load_kind"].astype(str) == kind) & (pts["load"].astype(float) == load)
        show = level == initial
        for mode in modes:
            for tp in tps:
                sel = at.copy()
                if "mode" in pts:
                    sel &= pts["mode"].astype(str) == mode
                if "tp" in pts:
                    sel &= pts["tp"] == tp
                if not sel.any():
                    continue
                g = pts[sel]
                hover = [point_hover(r, label, bool(meets[i])) for i, r in g.iterrows()]
                opacity = [1.0 if meets[i] else FADED for i in g.index]
                for k, panel in enumerate(panels):
                    fig.add_trace(go.Scatter(
                        x=g[panel].to_numpy(float), y=g["output_tps_per_gpu"].to_numpy(float), mode="markers",
                        name=f"{mode} TP{tp}", legendgroup=f"{mode} TP{tp}", showlegend=k == 0,
                        marker=dict(symbol=symbols[mode], color=colour[tp], size=11, opacity=opacity,
                                    line=dict(width=1, color="#333")),
                        hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", visible=show),
                        row=1, col=k + 1)
                    owner.append(level)
        ok = pts[at & meets]
        for k, panel in enumerate(panels):
            f = ok[np.isfinite(ok[panel].to_numpy(float))]
            if len(f):
                x = f[panel].to_numpy(float)
                y = f["output_tps_per_gpu"].to_numpy(float)
                m = pareto_mask(x if panel == "tps_user_mean" else -x, y)
                order = np.argsort(x[m])
                fig.add_trace(go.Scatter(
                    x=x[m][order], y=y[m][order], mode="lines", name="frontier (meets objectives)",
                    legendgroup="frontier", showlegend=k == 0, line=dict(color="#888", dash="dash", width=1.5),
                    hoverinfo="skip", visible=show), row=1, col=k + 1)
                owner.append(level)
            rec = best.get(level)
            r = pts[at & (pts["config"].astype(str) == rec)] if rec is not None else pts.iloc[:0]
            if len(r):
                fig.add_trace(go.Scatter(
                    x=r[panel].to_numpy(float), y=r["output_tps_per_gpu"].to_numpy(float), mode="markers",
                    name="recommended", legendgroup="recommended", showlegend=k == 0,
                    marker=dict(symbol="circle-open", size=24, color="#111", line=dict(width=2.5)),
                    hovertext=[f"recommended: {rec}"] * len(r), hovertemplate="%{hovertext}<extra></extra>",
                    visible=show), row=1, col=k + 1)
                owner.append(level)
    _objective_lines(fig, panels, objectives)
    for k, panel in enumerate(panels):
        fig.update_xaxes(title_text=metric_label(panel, unit=True), row=1, col=k + 1)
        fig.update_yaxes(title_text=metric_label("output_tps_per_gpu", unit=True), row=1, col=k + 1)
    title = lambda lv: f"Frontier at {load_label(lv[0], lv[1], rates.get(lv))}"  # noqa: E731
    fig.update_layout(**BASE_LAYOUT, height=520, title=dict(text=title(initial), x=0.01),
                      legend=dict(orientation="h", yanchor="top", y=-0.14, x=0))
    if len(levels) > 1:
        buttons = [dict(label=load_label(lv[0], lv[1]), method="update",
                        args=[{"visible": [o == lv for o in owner]}, {"title.text": title(lv)}])
                   for lv in levels]
        fig.update_layout(updatemenus=[dict(
            type="buttons" if len(levels) <= 6 else "dropdown", direction="right" if len(levels) <= 6 else "down",
            buttons=buttons, active=levels.index(initial), x=1.0, xanchor="right", y=1.16, yanchor="bottom",
            showactive=True, pad=dict(r=2, t=2))])
        fig.update_layout(margin=dict(t=110))
    return fig


def _objective_lines(fig: go.Figure, panels: list[str], objectives: dict[str, float]) -> None:
    """The objectives that map onto an axis, as dotted lines: TTFT p90 on the TTFT panel; a mean ITL of L ms
    on the tokens/s/user panel at 1000/L (mean tokens/s/user ≥ 1000/mean ITL, so this is where the bound
    starts: points left of it cannot meet it)."""
    lines = []
    if "ttft_p90" in panels and "ttft_p90_ms" in objectives:
        lines.append((panels.index("ttft_p90"), objectives["ttft_p90_ms"],
                      f"TTFT p90 ≤ {num(objectives['ttft_p90_ms'], 0)} ms"))
    if "tps_user_mean" in panels and objectives.get("itl_mean_ms"):
        lines.append((panels.index("tps_user_mean"), 1000.0 / objectives["itl_mean_ms"],
                      f"ITL mean ≤ {num(objectives['itl_mean_ms'], 1)} ms"))
    for k, x, text in lines:
        ax = "" if k == 0 else str(k + 1)
        fig.add_shape(type="line", xref=f"x{ax}", yref=f"y{ax} domain", x0=x, x1=x, y0=0, y1=1,
                      line=dict(color="#c0392b", dash="dot", width=1.5))
        fig.add_annotation(xref=f"x{ax}", yref=f"y{ax} domain", x=x, y=0, text=text, showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(color="#c0392b", size=11))


def _thin_sorted(v: np.ndarray, n: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """A CDF of ``v`` as at most ``n`` (value, percent) points, both ends kept."""
    v = np.sort(v)
    pct = np.arange(1, len(v) + 1) / len(v) * 100.0
    if len(v) > n:
        idx = np.unique(np.linspace(0, len(v) - 1, n).round().astype(int))
        v, pct = v[idx], pct[idx]
    return v, pct


LATENCIES = (("ttft_ms", "TTFT (ms)"), ("itl_ms", "ITL per request (ms)"), ("e2e_ms", "E2E (ms)"))


def finished(requests: pd.DataFrame) -> pd.DataFrame:
    """The requests that completed (all of them when the frame has no ``status``)."""
    if "status" in requests:
        return requests[requests["status"].astype(str) == "done"]
    return requests


def latency_cdf_figure(requests: pd.DataFrame | None) -> go.Figure | None:
    """The CDF of TTFT, ITL and E2E over the completed requests, p50/p90/p99 marked on the y axis."""
    if requests is None or requests.empty:
        return None
    done = finished(requests)
    cols = [(c, t) for c, t in LATENCIES if c in done and np.isfinite(done[c].to_numpy(float)).any()]
    if not cols:
        return None
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=[t for _, t in cols], horizontal_spacing=0.07)
    for k, (c, t) in enumerate(cols):
        v = done[c].to_numpy(float)
        v = v[np.isfinite(v)]
        x, p = _thin_sorted(v)
        fig.add_trace(go.Scatter(x=x, y=p, mode="lines", line=dict(color=PALETTE[k], width=2), showlegend=False,
                                 name=t, hovertemplate=f"{t}: %{{x:,.1f}}<br>%{{y:.1f}}% of requests at or "
                                                       f"below<extra></extra>"), row=1, col=k + 1)
        fig.update_xaxes(title_text=t, row=1, col=k + 1)
        fig.update_yaxes(range=[0, 101], tickvals=[0, 25, 50, 75, 90, 99], row=1, col=k + 1,
                         title_text="% of requests" if k == 0 else None)
    fig.update_layout(**BASE_LAYOUT, height=380,
                      title=dict(text=f"Latency CDFs ({len(done):,} completed requests)", x=0.01))
    return fig


def ttft_over_time_figure(requests: pd.DataFrame | None) -> go.Figure | None:
    """TTFT of each request against its arrival time: shows queues building up and draining."""
    if requests is None or requests.empty or not {"arrival_ms", "ttft_ms"} <= set(requests.columns):
        return None
    done = finished(requests).sort_values("arrival_ms")
    done = done[np.isfinite(done["ttft_ms"].to_numpy(float))]
    if done.empty:
        return None
    step = max(1, math.ceil(len(done) / MAX_SCATTER))
    d = done.iloc[::step]
    fig = go.Figure()
    workers = sorted(d["worker"].unique()) if "worker" in d else []
    if 1 < len(workers) <= len(PALETTE):     # a few workers: one colour each, named in the legend
        groups = [(f"worker {w}", d[d["worker"] == w], PALETTE[i]) for i, w in enumerate(workers)]
    else:
        groups = [("requests", d, PALETTE[0])]
    for name, g, colour in groups:
        fig.add_trace(go.Scatter(
            x=g["arrival_ms"].to_numpy(float) / 1000.0, y=g["ttft_ms"].to_numpy(float), mode="markers", name=name,
            marker=dict(size=5, color=colour, opacity=0.7), showlegend=len(groups) > 1,
            hovertemplate=f"{name}<br>arrival %{{x:,.1f}} s<br>TTFT %{{y:,.0f}} ms<extra></extra>"))
    thinned = f", every {step}th shown" if step > 1 else ""
    fig.update_layout(**BASE_LAYOUT, height=340, title=dict(text=f"TTFT by arrival time{thinned}", x=0.01),
                      xaxis_title="arrival (s)", yaxis_title="TTFT (ms)")
    return fig


# timeline panels: (column, title, per worker?) — pool-wide ones come from the worker == -1 rows
TIMELINE_PANELS = (("running", "running requests", True), ("waiting", "waiting requests", True),
                   ("kv_used_pct", "KV used (% of blocks)", True), ("kv_cached_pct", "KV cached (% of blocks)", True),
                   ("tokens_scheduled", "tokens scheduled", True), ("passes", "passes", True),
                   ("router_queue", "router queue", False), ("transfers_in_flight", "KV transfers in flight", False),
                   ("replicas", "replicas", False))


def thin_series(t: np.ndarray, v: np.ndarray, n: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray, bool]:
    """At most ``n`` points of a time series: equal time bins, each its first time and its largest value
    (peaks survive, which is what a queue plot is read for). Returns (t, v, thinned)."""
    if len(t) <= n:
        return t, v, False
    span = t[-1] - t[0]
    if span <= 0:
        return t[:1], v[:1], True
    b = np.minimum(((t - t[0]) / span * n).astype(int), n - 1)
    frame = pd.DataFrame({"b": b, "t": t, "v": v}).groupby("b", sort=True).agg(t=("t", "first"), v=("v", "max"))
    return frame["t"].to_numpy(), frame["v"].to_numpy(), True


def timeline_figure(timeline: pd.DataFrame | None) -> tuple[go.Figure | None, bool]:
    """Small multiples of the engine timeline, one line per worker (pool-wide series one per pool), shared time
    axis. Returns the figure and whether any series was thinned."""
    if timeline is None or timeline.empty:
        return None, False
    tl = timeline.copy()
    if {"kv_used_blocks", "kv_total_blocks"} <= set(tl.columns):
        tl["kv_used_pct"] = 100.0 * tl["kv_used_blocks"] / tl["kv_total_blocks"].where(tl["kv_total_blocks"] > 0)
    if {"kv_cached_blocks", "kv_total_blocks"} <= set(tl.columns):
        tl["kv_cached_pct"] = 100.0 * tl["kv_cached_blocks"] / tl["kv_total_blocks"].where(tl["kv_total_blocks"] > 0)
    workers = tl[tl["worker"] >= 0]
    pools = tl[tl["worker"] < 0]
    panels = []
    for col, title, per_worker in TIMELINE_PANELS:
        src = workers if per_worker else pools
        if col in src and src[col].notna().any():
            panels.append((col, title, src))
    if not panels:
        return None, False
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.25 / len(panels),
                        subplot_titles=[t for _, t, _ in panels])
    # workers first, in order, so worker i has the colour it has in the TTFT scatter; pool-wide series last
    series_keys = sorted({(str(p), int(w)) for p, w in zip(tl["pool"], tl["worker"])},
                         key=lambda pw: (pw[1] < 0, pw[0], pw[1]))
    colour = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(series_keys)}
    shown: set = set()
    thinned_any = False
    for r, (col, title, src) in enumerate(panels, start=1):
        for (pool, worker), g in src.groupby([src["pool"].astype(str), src["worker"].astype(int)], sort=True):
            g = g.sort_values("time_s")
            g = g[g[col].notna()]
            if g.empty:
                continue
            t, v, thinned = thin_series(g["time_s"].to_numpy(float), g[col].to_numpy(float))
            thinned_any |= thinned
            name = f"{pool} (pool)" if worker < 0 else f"{pool} worker {worker}"
            key = (pool, worker)
            fig.add_trace(go.Scatter(x=t, y=v, mode="lines", line=dict(color=colour[key], width=1.3, shape="hv"),
                                     name=name, legendgroup=name, showlegend=key not in shown,
                                     hovertemplate=f"{name}<br>%{{x:,.1f}} s: %{{y:,.4g}}<extra>{title}</extra>"),
                          row=r, col=1)
            shown.add(key)
    fig.update_xaxes(title_text="simulated time (s)", row=len(panels), col=1)
    fig.update_layout(**BASE_LAYOUT, height=170 * len(panels) + 120,
                      title=dict(text="Timeline" + (" (max per time bin)" if thinned_any else ""), x=0.01))
    return fig, thinned_any


REPLICA_LINES = (("target", "target", "dash"), ("ready", "ready", "solid"), ("starting", "starting", "dot"),
                 ("draining", "draining", "dashdot"), ("gpus", "GPUs", "longdash"))


def replicas_figure(replicas: pd.DataFrame | None, end_s: float | None = None) -> go.Figure | None:
    """The planner's replicas per pool as step lines (each change held until the next, the last until
    ``end_s``); hover says why each change happened."""
    if replicas is None or replicas.empty:
        return None
    why_col = "why" if "why" in replicas else ("reason" if "reason" in replicas else None)
    pools = list(dict.fromkeys(replicas["pool"].astype(str)))
    fig = make_subplots(rows=len(pools), cols=1, shared_xaxes=True, subplot_titles=[f"pool {p}" for p in pools],
                        vertical_spacing=0.3 / max(1, len(pools)))
    for r, pool in enumerate(pools, start=1):
        g = replicas[replicas["pool"].astype(str) == pool].sort_values("time_s", kind="stable")
        t = g["time_s"].to_numpy(float)
        why = g[why_col].astype(str).tolist() if why_col else [""] * len(g)
        if end_s is not None and len(t) and end_s > t[-1]:
            t = np.append(t, end_s)
            why = why + ["(end of run)"]
        for k, (col, label, dash) in enumerate(REPLICA_LINES):
            if col not in g:
                continue
            v = g[col].to_numpy(float)
            if len(v) < len(t):
                v = np.append(v, v[-1])
            fig.add_trace(go.Scatter(x=t, y=v, mode="lines+markers", name=label, legendgroup=label,
                                     showlegend=r == 1, line=dict(shape="hv", dash=dash, color=PALETTE[k], width=2),
                                     marker=dict(size=5), customdata=why,
                                     hovertemplate=f"{label}: %{{y:g}} at %{{x:,.1f}} s<br>%{{customdata}}"
                                                   f"<extra>{pool}</extra>"), row=r, col=1)
        fig.update_yaxes(title_text="count", rangemode="tozero", row=r, col=1)
    fig.update_xaxes(title_text="simulated time (s)", row=len(pools), col=1)
    fig.update_layout(**BASE_LAYOUT, height=260 * len(pools) + 120,
                      title=dict(text="Planner: replicas per pool", x=0.01))
    return fig
