"""What `dynosim run` prints: the latency table, throughput and cache totals, the planner's replica timeline.

Tables only (rich ``Table`` objects); the command decides where they go."""

from __future__ import annotations

from rich.table import Table

from dynosim.api import RunResult
from dynosim.cli.common import fmt, row_decimals


def objectives_text(g: dict) -> str:
    """The goodput objectives in words, e.g. 'TTFT ≤ 500 ms, ITL ≤ 50 ms'."""
    parts = [f"{name} ≤ {g[key]:g} ms" for name, key in (("TTFT", "slo_ttft_ms"), ("ITL", "slo_itl_ms"),
                                                           ("E2E", "slo_e2e_ms")) if g.get(key) is not None]
    return ", ".join(parts) or "no objectives"


def summary_table(res: RunResult) -> Table:
    s = res.summary
    d = res.config.disagg
    pools = f"{d.prefill_workers}P+{d.decode_workers}D" if d is not None else f"{res.config.workers} workers"
    t = Table(title=f"dynosim run: {s['requests']['completed']}/{s['requests']['total']} requests, "
                    f"{pools}{' (start; planner on)' if res.config.planner else ''}, router {res.config.router_mode}")
    # numbers never wrap or get cut; a narrow terminal wraps the metric names instead
    t.add_column("metric", overflow="fold")
    stats = ("mean", "p50", "p90", "p95", "p99", "std")
    for col in stats:
        t.add_column(col, justify="right", no_wrap=True)
    names = {"ttft_ms": "TTFT (ms)", "itl_ms": "ITL (ms)", "token_gap_ms": "token gap (ms)",
             "e2e_ms": "E2E (ms)", "tps_user": "tokens/s/user"}
    for key, label in names.items():
        values = [s[key][c] for c in stats]
        nd = row_decimals(values)
        t.add_row(label, *(fmt(v, nd) for v in values))
    return t


def totals_table(res: RunResult) -> Table:
    s = res.summary
    th = s["throughput"]
    t = Table(show_header=False, title="throughput and cache")
    t.add_column("k", overflow="fold")
    t.add_column("v", justify="right", no_wrap=True)
    rows = [
        ("simulated duration (s)", fmt(s["duration_s"], 1)),
        ("requests/s", fmt(th["requests_per_s"], 3)),
        ("output tokens/s", fmt(th["output_tokens_per_s"], 1)),
        ("output tokens/s/GPU", fmt(th["output_tokens_per_s_per_gpu"], 1)),
        ("input tokens/s", fmt(th["input_tokens_per_s"], 1)),
        ("GPU-seconds (mean GPUs)", f"{fmt(s['gpu_seconds'], 0)} ({fmt(s['mean_gpus'], 2)})"),
        (f"goodput req/s ({objectives_text(s['goodput'])})",
         f"{fmt(s['goodput']['requests_per_s'], 3)} ({fmt(100 * s['goodput']['attainment'], 1)}% attained)"),
        ("prefix reuse ratio", fmt(s["prefix_reuse_ratio"], 4)),
        ("preemptions", str(s["preemptions"])),
        ("failed requests", str(s["requests"]["failed"])),
        ("wall time (s)", fmt(s["run"]["wall_s"], 2)),
        ("× real time", fmt(s["run"]["x_realtime"], 0)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


def replicas_table(res: RunResult, max_rows: int = 40) -> Table:
    """The planner's replica timeline (changes only; long timelines show their first and last rows)."""
    tl = res.replicas
    t = Table(title=f"planner: replica timeline ({len(tl)} changes; peak {res.summary['planner']['peak_gpus']} GPUs)")
    for c in ("time (s)", "pool", "target", "starting", "ready", "draining", "GPUs", "why"):
        if c in ("pool", "why"):
            t.add_column(c, overflow="fold")
        else:
            t.add_column(c, justify="right", no_wrap=True)
    rows = list(tl.itertuples(index=False))
    if len(rows) > max_rows:
        rows = rows[: max_rows // 2] + [None] + rows[-max_rows // 2:]
    for r in rows:
        if r is None:
            t.add_row("…", "", "", "", "", "", "", "")
            continue
        t.add_row(fmt(r.time_s, 1), r.pool, str(r.target), str(r.starting), str(r.ready), str(r.draining),
                  str(r.gpus), r.reason)
    return t
