"""The sweep page's sections: the verdict and one card per load (best, runner-up, margin, fewest GPUs,
rejected), the interactive frontiers, the sortable points table and the spec."""

from __future__ import annotations

import math

import pandas as pd

from dynosim.metrics.catalog import BY_KEY
from dynosim.metrics.catalog import head as column_head
from dynosim.report.blocks import MAX_TABLE_ROWS, esc, figure_div, num, pre_yaml, section, table
from dynosim.report.data import SweepFolder

# the figures shown of a recommended point (best, runner-up), in the metric catalogue's heads and decimals
BEST_FIGURES = ("output_tps_per_gpu", "tps_user_mean", "ttft_p90", "itl_mean", "e2e_p90", "goodput_rps")


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
