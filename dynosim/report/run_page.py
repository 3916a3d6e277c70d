"""The run page's sections: the summary, latency CDFs, TTFT by arrival time, the timeline, the planner's
replicas, the hardware and the configuration."""

from __future__ import annotations

from dynosim.report.blocks import MAX_TABLE_ROWS, esc, figure_div, num, pre_yaml, section, table
from dynosim.report.data import RunFolder


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
