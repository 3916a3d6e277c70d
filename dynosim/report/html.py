"""Assembling the report page: header, one section per kind of data present, Plotly's JavaScript inlined once.

The page has no external references (no CDN, no fonts, no images by URL), so it opens offline and can be
mailed as one file. Figures go in as JSON (``<`` escaped so no data can close a ``<script>``) with fixed
div ids, so the same folder gives the same page; the "made" time honours ``SOURCE_DATE_EPOCH``.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from dynosim import __version__
from dynosim.metrics.catalog import BY_KEY
from dynosim.metrics.catalog import head as column_head
from dynosim.report.data import ReportError, RunFolder, SweepFolder, folder_kind, load_folder

# the figures shown of a recommended point (best, runner-up), in the metric catalogue's heads and decimals
BEST_FIGURES = ("output_tps_per_gpu", "tps_user_mean", "ttft_p90", "itl_mean", "e2e_p90", "goodput_rps")
MAX_TABLE_ROWS = 500      # rows of the points / replica tables before the rest is elided


class Raw(str):
    """Markup that table cells take as is (everything else is escaped)."""


def esc(v) -> str:
    return v if isinstance(v, Raw) else html.escape("" if v is None else str(v))


def num(v, nd: int = 1) -> str:
    from dynosim.report.figures import num as _num

    return _num(v, nd)


def table(headers: list[str], rows: list[list], *, cls: str = "", sortable: bool = False,
          numeric: set[int] | None = None) -> str:
    """An HTML table; ``numeric`` columns are right-aligned and sort by value (``data-v``)."""
    numeric = numeric or set()
    classes = " ".join(c for c in (cls, "sortable" if sortable else "") if c)
    out = [f'<table class="{classes}">']
    if any(headers):
        out.append("<thead><tr>")
        out += [f'<th{" class=num" if i in numeric else ""}>{esc(h)}</th>' for i, h in enumerate(headers)]
        out.append("</tr></thead>")
    out.append("<tbody>")
    for r in rows:
        out.append("<tr>")
        for i, c in enumerate(r):
            if isinstance(c, tuple):        # (shown text, sort value)
                shown, key = c
                out.append(f'<td class="num" data-v="{esc(key)}">{esc(shown)}</td>')
            else:
                out.append(f'<td{" class=num" if i in numeric else ""}>{esc(c)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def figure_div(fig, div_id: str) -> str:
    """A figure as a div and the script that draws it (Plotly itself is loaded once, in the head)."""
    import plotly.io as pio

    spec = pio.to_json(fig, validate=False, pretty=False).replace("<", "\\u003c")
    height = fig.layout.height or 450
    config = json.dumps({"responsive": True, "displaylogo": False})
    div_id = f"fig-{div_id}"       # never the id of a section (Plotly would draw into the section)
    return (f'<div id="{div_id}" class="dsfig" style="height:{int(height)}px"></div>'
            f'<script>(function(){{var f={spec};Plotly.newPlot("{div_id}",f.data,f.layout,{config});}})();</script>')


def made_at() -> str:
    """Now in UTC, or ``SOURCE_DATE_EPOCH`` when set (reproducible pages)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch and epoch.isdigit() else \
        datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def section(sid: str, title: str, body: str) -> tuple[str, str, str]:
    return sid, title, f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def pre_yaml(data) -> str:
    import yaml

    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
    return f"<pre>{esc(text)}</pre>"


# ------------------------------------------------------------------------------------------------- sweep

def _objectives_text(objectives: dict[str, float]) -> str:
    from dynosim.report.figures import OBJECTIVE_LABELS

    parts = [f"{OBJECTIVE_LABELS.get(k, k)} ≤ {num(v, 1 if v < 100 else 0)} ms" for k, v in objectives.items()]
    return ", ".join(parts) if parts else "none (every point without failed requests qualifies)"


def _point_cells(p: dict | None) -> list:
    """A recommended POINT as table cells: config, GPUs, then its figures with ± when it has intervals."""
    if not p:
        return ["-"] * 8
    figs, ci = p.get("figures") or {}, p.get("ci") or {}

    def f(m: str, nd: int) -> str:
        v = figs.get(m)
        c = ci.get(m)
        pm = f" ± {num(c, nd)}" if c is not None and isinstance(c, (int, float)) and c > 0 else ""
        return num(v, nd) + pm

    return [p.get("config", "?"), str(p.get("num_gpus", "-")), *(f(k, BY_KEY[k].decimals) for k in BEST_FIGURES)]


def _missed_text(entry: dict) -> str:
    from dynosim.report.figures import OBJECTIVE_LABELS

    parts = []
    for m in entry.get("missed") or []:
        name = m.get("label") or OBJECTIVE_LABELS.get(m.get("objective"), m.get("objective"))
        limit, value = m.get("limit"), m.get("value")
        nd = 2 if (limit or 0) < 100 else 0
        over = m.get("over_pct")
        if value is None:
            parts.append(f"{name}: no figure (nothing completed)")
            continue
        parts.append(f"{name} {num(value, nd)} ms > {num(limit, nd)} ms"
                     + (f" (+{num(over, 1)}%)" if over is not None else ""))
    failed = entry.get("failed_requests") or 0
    if failed:
        parts.append(f"{failed} failed request{'s' if failed != 1 else ''}")
    return "; ".join(parts) if parts else "-"


def _margin_text(margin: dict | None) -> str:
    if not margin:
        return ""
    metric = "tokens/s/GPU" if margin.get("metric", "output_tps_per_gpu") == "output_tps_per_gpu" \
        else str(margin.get("metric"))
    text = f"Ahead of the runner-up by {num(margin.get('abs'), 1)} {metric}"
    ratio = margin.get("ratio")        # relative to the runner-up: 0.05 is 5% ahead
    if isinstance(ratio, (int, float)) and math.isfinite(ratio):
        text += f" ({100 * ratio:+.1f}%)"
    sig, ci = margin.get("significant"), margin.get("ci")
    if sig is None:
        text += "; one seed, so no interval to judge it by."
    elif sig:
        text += f"; beyond the 95% interval (± {num(ci, 1)}): a real difference."
    else:
        text += f"; within the 95% interval (± {num(ci, 1)}): not a significant difference."
    return text


def recommendation_body(rec: dict) -> str:
    """The verdict, the objectives, then per load the best, runner-up, margin, fewest GPUs and the rejected."""
    from dynosim.report.figures import load_label

    ok = bool(rec.get("feasible"))
    out = [f'<div class="verdict {"ok" if ok else "warn"}">{esc(rec.get("verdict", ""))}</div>']
    target = rec.get("target") or {}
    facts = [("objectives", _objectives_text({k: v for k, v in (rec.get("objectives") or {}).items()
                                                if v is not None}))]
    if target.get("load") is not None:
        facts.append(("target load", load_label(target.get("load_kind", "rate"), float(target["load"]),
                                                target.get("rate_rps"))))
    if rec.get("gpu_budget") is not None:
        facts.append(("GPU budget", str(rec["gpu_budget"])))
    out.append(table([], [[k, v] for k, v in facts], cls="facts"))
    heads = ["", "config", "GPUs", *(column_head(k) for k in BEST_FIGURES)]
    for lv in rec.get("loads") or []:
        kind, load = lv.get("load_kind", "rate"), lv.get("load")
        label = load_label(kind, float(load), lv.get("rate_rps")) if load is not None else "?"
        is_target = load is not None and target.get("load") == load and target.get("load_kind", "rate") == kind
        head = f"{label}: {lv.get('feasible_points', '?')} of {lv.get('points', '?')} deployments meet the objectives"
        out.append(f'<div class="load{" target" if is_target else ""}"><h3>{esc(head)}'
                   f'{" <span class=tag>target</span>" if is_target else ""}</h3>')
        rows = []
        if lv.get("best"):
            rows.append(["best", *_point_cells(lv["best"])])
        if lv.get("runner_up"):
            rows.append(["runner-up", *_point_cells(lv["runner_up"])])
        if rows:
            out.append(table(heads, rows, numeric=set(range(2, 9))))
        else:
            out.append("<p>No deployment meets the objectives at this load.</p>")
        if lv.get("margin"):
            out.append(f"<p>{esc(_margin_text(lv['margin']))}</p>")
        bml = lv.get("best_max_load")
        if lv.get("best") and bml is not None:
            out.append(f"<p>The best meets the objectives up to {esc(load_label(kind, float(bml)))}.</p>")
        fg = lv.get("fewest_gpus")
        if fg:
            ml = fg.get("max_load")
            up_to = f", meeting the objectives up to {load_label(kind, float(ml))}" if ml is not None else ""
            out.append(f"<p>Fewest GPUs: <b>{esc(fg.get('config'))}</b> on {esc(fg.get('gpus'))} GPUs"
                       f"{esc(up_to)}{' (extrapolated)' if fg.get('extrapolated') else ''}.</p>")
        for key, title in (("rejected", "rejected"), ("closest", "closest to the objectives")):
            entries = lv.get(key) or []
            if entries:
                rows = [[e.get("config", "?"), _missed_text(e)] for e in entries]
                out.append(f"<details{' open' if key == 'closest' else ''}><summary>{len(entries)} {title}"
                           f"</summary>{table(['config', 'what it missed'], rows)}</details>")
        out.append("</div>")
    return "".join(out)


# the points table's figures: (column, head, decimals), from the metric catalogue
POINT_TABLE = tuple((k, column_head(k), BY_KEY[k].decimals)
                    for k in ("output_tps_per_gpu", "tps_user_mean", "ttft_p50", "ttft_p90", "itl_mean", "itl_p90",
                              "e2e_p90", "goodput_rps", "slo_attainment"))


def points_table(points: pd.DataFrame, meets) -> str:
    """Every point, sortable by clicking a header; figures carry ± when seeds repeat."""

    cols = [(c, label, nd) for c, label, nd in POINT_TABLE if c in points]
    heads = ["config", "load", *[label for _, label, _ in cols], "failed", "meets"]
    order = points.assign(_m=meets).sort_values(
        [c for c in ("load_kind", "load", "output_tps_per_gpu") if c in points],
        ascending=[True, True, False][: len([c for c in ("load_kind", "load", "output_tps_per_gpu") if c in points])],
        kind="stable")
    rows = []
    for _, r in order.head(MAX_TABLE_ROWS).iterrows():
        repeats = int(r["repeats"]) if "repeats" in r and r["repeats"] == r["repeats"] else 1
        short = f"c{r['load']:g}" if str(r["load_kind"]) == "concurrency" else f"×{r['load']:g}"
        cells: list = [str(r["config"]), (short, float(r["load"]))]
        for c, _, nd in cols:
            ci = r.get(f"{c}_ci")
            pm = f" ± {num(ci, nd)}" if repeats > 1 and ci is not None and ci == ci else ""
            v = float(r[c]) if r[c] == r[c] else float("nan")
            cells.append((num(v, nd) + pm, v if math.isfinite(v) else ""))
        failed = int(r["failed"]) if "failed" in r and r["failed"] == r["failed"] else 0
        cells.append((str(failed), failed))
        cells.append("yes" if r["_m"] else "no")
        rows.append(cells)
    more = f"<p>{len(points) - MAX_TABLE_ROWS} more rows in points.csv.</p>" if len(points) > MAX_TABLE_ROWS else ""
    return table(heads, rows, sortable=True, cls="points") + more


def sweep_sections(s: SweepFolder) -> list[tuple[str, str, str]]:
    from dynosim.report.figures import frontier_figure, load_levels, meets_mask

    rec = s.recommendation
    objectives = s.objectives
    out = []
    rates, best, initial = {}, {}, None
    if rec:
        out.append(section("recommendation", "Recommendation", recommendation_body(rec)))
        for lv in rec.get("loads") or []:
            if lv.get("load") is None:
                continue
            key = (str(lv.get("load_kind", "rate")), float(lv["load"]))
            if lv.get("rate_rps") is not None:
                rates[key] = float(lv["rate_rps"])
            if lv.get("best"):
                best[key] = str(lv["best"].get("config"))
        t = rec.get("target") or {}
        if t.get("load") is not None:
            initial = (str(t.get("load_kind", "rate")), float(t["load"]))
    pts = s.points
    meets = meets_mask(pts, objectives)
    fig = frontier_figure(pts, objectives, initial=initial, best=best, rates=rates)
    levels = load_levels(pts)
    if fig is not None:
        faded = "faded points miss an objective" + (f" ({_objectives_text(objectives)})" if objectives else
                                                    " (the sweep's filters: meets_slo in points.csv)")
        body = (f"<p>{len(pts)} points at {len(levels)} load level{'s' if len(levels) != 1 else ''}; "
                f"{int(meets.sum())} meet the objectives. Circles are aggregated, squares disaggregated "
                f"deployments; colour is the tensor-parallel degree; {esc(faded)}; the dashed grey line is the "
                f"frontier of the "
                f"points that meet them; a ring marks the recommended deployment; dotted red lines are the "
                f"objectives that map onto an axis. Hover a point for its figures (± is a 95% interval over "
                f"seeds). {'Choose the load above the plot.' if len(levels) > 1 else ''}</p>"
                + figure_div(fig, "frontier"))
    else:
        body = "<p>points.csv has neither tps_user_mean nor ttft_p90 to draw a frontier against.</p>"
    out.append(section("frontier", "Frontier", body))
    out.append(section("points", "Points", points_table(pts, meets)))
    if s.spec_text is not None:
        out.append(section("configuration", "Sweep configuration", "<p>spec.yaml</p>" + pre_yaml(s.spec_text)))
    return out


# --------------------------------------------------------------------------------------------------- run

LATENCY_ROWS = (("ttft_ms", "TTFT (ms)"), ("itl_ms", "ITL per request (ms)"), ("token_gap_ms", "token gap (ms)"),
                ("e2e_ms", "E2E (ms)"), ("tps_user", "tokens/s/user"))
STATS = ("mean", "p50", "p90", "p95", "p99", "std", "max")


def deployment_text(cfg: dict | None) -> str:
    if not cfg:
        return "deployment unknown"
    d = cfg.get("disagg")
    pools = f"{d.get('prefill_workers')}P+{d.get('decode_workers')}D" if d else f"{cfg.get('workers')} worker(s)"
    planner = " (starting point; planner on)" if cfg.get("planner") else ""
    return f"{pools}{planner}, router {cfg.get('router_mode', '?')}"


def run_summary_body(r: RunFolder) -> str:
    s = r.summary
    out = [f"<p>{esc(deployment_text(r.config))}.</p>"]
    rows = []
    for key, label in LATENCY_ROWS:
        d = s.get(key)
        if isinstance(d, dict):
            rows.append([label, *[(num(d.get(c), 2), d.get(c, "")) for c in STATS]])
    if rows:
        out.append("<h3>Latency</h3>" + table(["metric", *STATS], rows, numeric=set(range(1, len(STATS) + 1))))
    req = s.get("requests") or {}
    th = s.get("throughput") or {}
    g = s.get("goodput") or {}
    facts = []
    if req:
        facts.append(("requests completed / total",
                      f"{req.get('completed', '?')} / {req.get('total', '?')} ({req.get('failed', 0)} failed)"))
    for label, v, nd in (("simulated duration (s)", s.get("duration_s"), 1),
                         ("requests/s", th.get("requests_per_s"), 3),
                         ("output tokens/s", th.get("output_tokens_per_s"), 1),
                         ("output tokens/s/GPU", th.get("output_tokens_per_s_per_gpu"), 1),
                         ("input tokens/s", th.get("input_tokens_per_s"), 1),
                         ("GPU-seconds", s.get("gpu_seconds"), 0), ("mean GPUs", s.get("mean_gpus"), 2),
                         ("prefix reuse ratio", s.get("prefix_reuse_ratio"), 4)):
        if v is not None:
            facts.append((label, num(v, nd)))
    if g:
        slo = ", ".join(f"{name} ≤ {num(g[k], 0)} ms" for name, k in (("TTFT", "slo_ttft_ms"), ("ITL", "slo_itl_ms"),
                                                                     ("E2E", "slo_e2e_ms")) if g.get(k) is not None)
        facts.append((f"goodput req/s ({slo or 'no objectives'})",
                      f"{num(g.get('requests_per_s'), 3)} ({num(100 * float(g.get('attainment', float('nan'))), 1)}% "
                      f"of requests)"))
    if s.get("preemptions") is not None:
        facts.append(("preemptions", str(s["preemptions"])))
    run = s.get("run") or {}
    if run.get("wall_s") is not None:
        facts.append(("wall time (s)", f"{num(run['wall_s'], 2)} ({num(run.get('x_realtime'), 0)}× real time)"))
    if facts:
        out.append("<h3>Throughput and goodput</h3>" + table([], [list(f) for f in facts], cls="facts", numeric={1}))
    return "".join(out)


def run_sections(r: RunFolder) -> list[tuple[str, str, str]]:
    from dynosim.report.figures import (latency_cdf_figure, replicas_figure, timeline_figure,
                                        ttft_over_time_figure)

    out = [section("summary", "Summary", run_summary_body(r))]
    cdf = latency_cdf_figure(r.requests)
    ttft = ttft_over_time_figure(r.requests)
    if cdf is not None or ttft is not None:
        body = "<p>From requests.parquet: completed requests only.</p>"
        body += figure_div(cdf, "latency-cdf") if cdf is not None else ""
        body += figure_div(ttft, "ttft-time") if ttft is not None else ""
        out.append(section("latency", "Latency distributions", body))
    tl_fig, thinned = timeline_figure(r.timeline)
    if tl_fig is not None:
        note = (" Long series are drawn as the largest value in each of up to 1,000 time bins, so peaks show."
                if thinned else "")
        out.append(section("timeline", "Timeline",
                           f"<p>From timeline.parquet: one line per worker; pool-wide series one per pool. "
                           f"Clicking a legend entry hides that worker in every panel.{note}</p>"
                           + figure_div(tl_fig, "timeline")))
    if r.replicas is not None and not r.replicas.empty:
        end_s = None
        dur = r.summary.get("duration_s")
        if dur is not None:
            first = 0.0
            if r.requests is not None and "arrival_ms" in r.requests and len(r.requests):
                first = float(r.requests["arrival_ms"].min()) / 1000.0
            end_s = float(dur) + first
        fig = replicas_figure(r.replicas, end_s)
        why = "why" if "why" in r.replicas else ("reason" if "reason" in r.replicas else None)
        cols = [c for c in ("time_s", "pool", "target", "starting", "ready", "draining", "gpus") if c in r.replicas]
        rows = [[*[(num(x.get(c), 1), x.get(c)) if c == "time_s" else str(x.get(c)) for c in cols],
                 str(x.get(why, "")) if why else ""]
                for x in r.replicas.head(MAX_TABLE_ROWS).to_dict("records")]
        more = (f"<p>{len(r.replicas) - MAX_TABLE_ROWS} more rows in replicas.parquet.</p>"
                if len(r.replicas) > MAX_TABLE_ROWS else "")
        body = ("<p>From replicas.parquet: each change of the planner's replicas.</p>" + figure_div(fig, "replicas")
                + f"<details><summary>{len(r.replicas)} changes</summary>"
                + table([*cols, "why"], rows, numeric=set(range(len(cols))) - {cols.index("pool")}
                        if "pool" in cols else set()) + more + "</details>")
        out.append(section("planner", "Planner", body))
    hw = r.summary.get("hardware")
    if isinstance(hw, dict) and hw:
        out.append(section("hardware", "Hardware", pre_yaml(hw)))
    if r.config:
        out.append(section("configuration", "Run configuration", pre_yaml(r.config)))
    return out


# -------------------------------------------------------------------------------------------------- page

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1b2a3a;color:#fff;padding:18px 28px}header h1{margin:0 0 6px;font-size:22px}
header .meta{font-size:13px;opacity:.85}header .meta span{margin-right:18px}
nav{padding:8px 28px;background:#eef1f4;font-size:13px;position:sticky;top:0;z-index:5}
nav a{margin-right:16px;color:#1b4f8a;text-decoration:none}
main{padding:8px 28px 40px;max-width:1400px}section{margin-top:22px}h2{font-size:18px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;font-size:13px;margin:6px 0;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f0f2f5}
.num{text-align:right;white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e2e6ea}table.points td:first-child{white-space:nowrap}
table.facts td:first-child{color:#555}pre{background:#fff;border:1px solid #ddd;padding:10px;font-size:12px;
overflow:auto;max-height:480px}.verdict{padding:12px 16px;font-size:15px;border-left:5px solid;background:#fff;
margin:8px 0}.verdict.ok{border-color:#2e8b57}.verdict.warn{border-color:#d98c00}
.load{background:#fff;border:1px solid #e2e2e2;padding:4px 14px 8px;margin:10px 0}.load.target{border-color:#1b4f8a}
.tag{background:#1b4f8a;color:#fff;font-size:11px;padding:1px 6px;border-radius:3px;margin-left:6px}
.dsfig{width:100%;background:#fff;border:1px solid #e2e2e2;margin:8px 0}details{margin:6px 0}summary{cursor:pointer}
"""

SORT_JS = """
document.addEventListener('click',function(e){var th=e.target.closest('table.sortable th');if(!th)return;
var tb=th.closest('table').tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),
asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
var rows=Array.prototype.slice.call(tb.rows);rows.sort(function(a,b){var x=a.cells[i],y=b.cells[i];
var u=x.dataset.v,v=y.dataset.v;var r=(u!==undefined&&v!==undefined&&u!==''&&v!=='')?(parseFloat(u)-parseFloat(v))
:x.textContent.localeCompare(y.textContent);return asc?r:-r;});rows.forEach(function(r){tb.appendChild(r);});});
"""


def render_report(d: str | Path) -> str:
    """The whole page for the run or sweep folder ``d``."""
    from plotly.offline import get_plotlyjs

    folder = load_folder(d)
    path = Path(d)
    if isinstance(folder, SweepFolder):
        kind, sections = "sweep", sweep_sections(folder)
        extra = []
        budget = (folder.recommendation or {}).get("gpu_budget") or (folder.spec or {}).get("gpu_budget")
        if budget is not None:
            extra.append(f"GPU budget {budget}")
    else:
        kind, sections = "run", run_sections(folder)
        extra = []
        run = folder.summary.get("run") or {}
        if run.get("seed") is not None:
            extra.append(f"seed {run['seed']}")
        if run.get("dynosim_version") and run["dynosim_version"] != __version__:
            extra.append(f"simulated with dynosim {run['dynosim_version']}")
    meta = [f"folder {path}", f"dynosim {__version__}", f"made {made_at()}",
            f"trace {folder.trace or 'not recorded'}", *extra]
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    title = f"dynosim {kind} report: {path.resolve().name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script><script>{SORT_JS}</script></head><body>'
            f'<header><h1>{esc(title)}</h1><div class="meta">'
            + "".join(f"<span>{esc(m)}</span>" for m in meta)
            + f"</div></header><nav>{nav}</nav><main>"
            + "".join(body for _, _, body in sections)
            + "</main></body></html>\n")


def check_writable(out: str | Path) -> None:
    """Raise ReportError unless a file can be written at ``out`` (checked before any work is done)."""
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"{out}: is a folder, not a file")
    parent = out.parent
    if not parent.is_dir():
        raise ReportError(f"{out}: folder {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".report-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write in {parent}: {exc.strerror or exc}") from None
    if out.exists() and not os.access(out, os.W_OK):
        raise ReportError(f"{out}: file is not writable")


def write_report(d: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run or sweep folder ``d`` to ``out`` (default ``d/report.html``); returns it."""
    d = Path(d)
    folder_kind(d)                          # a bad folder is the first error, before --out
    target = Path(out) if out is not None else d / "report.html"
    check_writable(target)
    page = render_report(d)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"{target}: cannot write: {exc.strerror or exc}") from None
    return target
