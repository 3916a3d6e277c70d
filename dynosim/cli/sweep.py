"""`dynosim sweep` (deployments over a trace, Pareto frontier) and `dynosim regress` (figures vs a baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from dynosim.cli.app import app, console, err_console
from dynosim.cli.common import (P_LOAD, P_OUTPUT, P_SLO, AcceptRatesOpt, HwBackendOpt, HwKvQuantOpt, HwMemUtilOpt,
                                HwModelOpt, HwSystemOpt, HwVersionOpt, HwWeightQuantOpt, LimitOpt, NextnOpt, TraceOpt,
                                accept_rates, fail, float_list, fmt, given_flags, hardware_section, load_run_config,
                                refuse, row_decimals, validation_message)
from dynosim.sweeps.recommend import EXIT_NOTHING_MEETS
from dynosim.traces.mooncake import TraceError


# help panels of the sweep's own flags (the shared ones bring theirs from common.py)
P_GRID = "Deployments swept"
P_EXEC = "Execution"


def recommendation_table(rec: dict) -> Table:
    """Per load: the winner, its throughput, the runner-up and margin, the fewest-GPU view, how many meet."""
    from dynosim.sweeps.recommend import load_text

    t = Table(title="best deployment per load (most output tok/s/GPU meeting every objective)",
              title_justify="left")
    t.add_column("load", no_wrap=True)
    t.add_column("best", overflow="fold")
    t.add_column("tok/s/GPU", justify="right", no_wrap=True)
    t.add_column("runner-up (margin)", overflow="fold")
    t.add_column("fewest GPUs", overflow="fold")
    t.add_column("meet", justify="right", no_wrap=True)
    for x in rec["loads"]:
        b, r, m, fg = x["best"], x["runner_up"], x["margin"], x["fewest_gpus"]
        margin = ""
        if m is not None and m["ratio"] is not None:
            margin = f" ({100 * m['ratio']:+.1f}%" + (f" ±{m['ci']:,.1f}" if m["ci"] is not None else "") + ")"
        star = "*" if x["load"] == rec["target"]["load"] else ""
        t.add_row(load_text(x["load"], x["load_kind"]) + star, b["config"] if b else "[red]none[/red]",
                  fmt(b["figures"]["output_tps_per_gpu"], 0) if b else "—",
                  (r["config"] + margin) if r else "—",
                  f"{fg['gpus']}: {fg['config']}" + (" (extrap.)" if fg["extrapolated"] else "") if fg else "—",
                  f"{x['feasible_points']}/{x['points']}")
    return t


def rejected_table(entry: dict, top: int) -> Table:
    """Why the deployments that lose at one load lose: the objective each missed and by how much."""
    from dynosim.sweeps.recommend import load_text, miss_text

    rows = entry["rejected"] if entry["best"] is not None else entry["closest"]
    at = load_text(entry["load"], entry["load_kind"])
    n = len(entry["rejected"])
    title = f"why the others lose at {at}: {n} miss" if entry["best"] is not None \
        else f"closest at {at} (all {n} miss)"
    if len(rows) > top:
        title += f" (closest {top} shown)"
    t = Table(title=title, title_justify="left")
    t.add_column("deployment", overflow="fold")
    t.add_column("missed (value > limit, overshoot)", overflow="fold")
    for rej in rows[:top]:
        t.add_row(rej["config"], miss_text(rej))
    return t


def frontier_table(front, top: int, title: str) -> Table:
    """The frontier at one load: the best points by output tokens/s/GPU among those meeting the objectives."""
    t = Table(title=title, title_justify="left")
    cols = [("deployment", "config", None), ("tok/s/GPU", "output_tps_per_gpu", 0),
            ("tok/s/user", "tps_user_mean", 1), ("TTFT p90", "ttft_p90", 0), ("ITL", "itl_mean", 1),
            ("goodput", "goodput_rps", 2)]
    for label, key, _ in cols:
        t.add_column(label, justify="left" if key == "config" else "right",
                     overflow="fold" if key == "config" else "ellipsis", no_wrap=key != "config")
    for _, r in front.sort_values("output_tps_per_gpu", ascending=False).head(top).iterrows():
        cells = []
        for _, key, nd in cols:
            if key == "config":
                cells.append(str(r[key]))
                continue
            ci = r.get(f"{key}_ci", 0.0)
            cells.append(fmt(r[key], nd) + (f"±{fmt(ci, nd)}" if ci and ci == ci else ""))
        t.add_row(*cells)
    return t


@app.command()
def sweep(
    ctx: typer.Context,
    trace: TraceOpt,
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="YAML/JSON SweepSpec (flags override it)",
                                             rich_help_panel=P_GRID),
    budget: Optional[int] = typer.Option(None, help="GPUs per deployment (default 16)", rich_help_panel=P_GRID),
    mode: Optional[str] = typer.Option(None, help="comma list: agg, disagg", rich_help_panel=P_GRID),
    model: HwModelOpt = None,
    system: HwSystemOpt = None,
    backend: HwBackendOpt = None,
    backend_version: HwVersionOpt = None,
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    gpu_memory_utilization: HwMemUtilOpt = None,
    tp: Optional[str] = typer.Option(None, help="comma list of tensor-parallel degrees (GPUs per worker)",
                                     rich_help_panel=P_GRID),
    ep: Optional[str] = typer.Option(None, help="MoE: comma list of expert-parallel degrees", rich_help_panel=P_GRID),
    dp: Optional[str] = typer.Option(None, help="MoE: comma list of attention data-parallel degrees",
                                     rich_help_panel=P_GRID),
    nextn: NextnOpt = 0,
    nextn_accept_rates: AcceptRatesOpt = None,
    router_mode: Optional[str] = typer.Option(None, "--router-mode", help="comma list of routing policies",
                                              rich_help_panel=P_GRID),
    load: Optional[str] = typer.Option(None, help="comma list of arrival-rate factors (default 1,2,4,8)",
                                       rich_help_panel=P_LOAD),
    concurrency: Optional[str] = typer.Option(None, help="comma list of closed-loop concurrencies (sessions "
                                              "open at once), instead of --load", rich_help_panel=P_LOAD),
    repeats: Optional[int] = typer.Option(None, help="seeds per point (confidence intervals)", rich_help_panel=P_EXEC),
    resample_fraction: Optional[float] = typer.Option(None, help="with --repeats: each seed replays its own random "
                                                      "subset of this share of the sessions", rich_help_panel=P_EXEC),
    executor: str = typer.Option("local", help="local (process pool, all cores), serial, or ray",
                                 rich_help_panel=P_EXEC),
    jobs: Optional[int] = typer.Option(None, help="parallel simulations (default: all cores)", rich_help_panel=P_EXEC),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: a local instance)",
                                              rich_help_panel=P_EXEC),
    limit: LimitOpt = None,
    ttft_p90: Optional[float] = typer.Option(None, "--ttft-p90", help="objective: p90 TTFT ≤ this (ms)",
                                             rich_help_panel=P_SLO),
    itl: Optional[float] = typer.Option(None, "--itl", help="objective: mean ITL ≤ this (ms)", rich_help_panel=P_SLO),
    itl_p90: Optional[float] = typer.Option(None, "--itl-p90", help="objective: p90 ITL ≤ this (ms)",
                                            rich_help_panel=P_SLO),
    e2e: Optional[float] = typer.Option(None, "--e2e", help="objective: p90 E2E ≤ this (ms)", rich_help_panel=P_SLO),
    target_load: Optional[float] = typer.Option(None, "--target-load", help="the load to recommend for "
                                                "(default ×1, the trace's rate; with --concurrency, the first)",
                                                rich_help_panel=P_SLO),
    out: Path = typer.Option(Path("sweep-out"), "--out", "-o", help="results folder (re-running resumes it)",
                             rich_help_panel=P_OUTPUT),
    top: int = typer.Option(8, help="rows of the printed tables", rich_help_panel=P_OUTPUT),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html", rich_help_panel=P_OUTPUT),
    fresh: bool = typer.Option(False, "--fresh", help="clear the results in --out first (a folder keeps the "
                               "results of one trace, limit and profiles; resuming with others is refused)",
                               rich_help_panel=P_EXEC),
) -> None:
    """Sweep deployments over a trace and recommend one per load: the one meeting every objective with the
    most output tokens/s/GPU, the runner-up, and why the others lose. Exit 4 when nothing meets the
    objectives at the target load."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from dynosim.sweeps.runner import PointError, SweepStopped
    from dynosim.sweeps.spec import SweepSpec, expand, skipped_layouts
    from dynosim.sweeps.sweep import sweep as sweep_api

    if executor not in ("local", "serial", "ray"):
        fail(f"--executor: unknown {executor!r}; choose local, serial or ray")
    given = given_flags(ctx)
    if executor != "ray":
        refuse(given, ["ray_address"], f"with --executor {executor} (a Ray cluster runs only --executor ray)")
    if executor == "serial":
        refuse(given, ["jobs"], "with --executor serial (one simulation at a time)")
    elif ray_address is not None:
        refuse(given, ["jobs"], "with --ray-address (the cluster's CPUs decide)")
    if concurrency is not None:
        refuse(given, ["load"], "with --concurrency (closed-loop concurrencies replace arrival-rate factors)")
    if jobs is not None and jobs < 1:
        fail(f"--jobs must be ≥ 1, got {jobs}")
    if trace.is_dir():
        fail(f"--trace {trace}: is a directory, not a file")
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a directory")
    fields = load_run_config(spec_file, "--spec") if spec_file is not None else {}
    hw = hardware_section(model, system, backend, backend_version, None, None, None, None, weight_quant, kv_quant,
                          gpu_memory_utilization)
    if hw is not None:
        fields["hardware"] = {**(fields.get("hardware") or {}), **hw}
    if nextn or nextn_accept_rates:
        fields["engine"] = {**(fields.get("engine") or {}), "nextn": nextn,
                            **({"nextn_accept_rates": accept_rates(nextn_accept_rates)} if nextn_accept_rates
                               else {})}
    over = {"gpu_budget": budget, "repeats": repeats, "resample_fraction": resample_fraction,
            "modes": [m.strip() for m in mode.split(",") if m.strip()] if mode else None,
            "tp": [int(x) for x in float_list(tp, "--tp")] if tp else None,
            "ep": [int(x) for x in float_list(ep, "--ep")] if ep else None,
            "dp": [int(x) for x in float_list(dp, "--dp")] if dp else None,
            "router_modes": [m.strip() for m in router_mode.split(",") if m.strip()] if router_mode else None,
            "arrival_speedups": float_list(load, "--load"),
            "concurrency": [int(x) for x in float_list(concurrency, "--concurrency")] if concurrency else None}
    fields.update({k: v for k, v in over.items() if v is not None})
    objectives = {"ttft_p90_ms": ttft_p90, "itl_mean_ms": itl, "itl_p90_ms": itl_p90, "e2e_p90_ms": e2e,
                  "target_load": target_load}
    if any(v is not None for v in objectives.values()):
        fields["objectives"] = {**(fields.get("objectives") or {}),
                                **{k: v for k, v in objectives.items() if v is not None}}
    loads_asked = fields.get("concurrency") or fields.get("arrival_speedups")
    try:
        spec = SweepSpec(**fields)
        n = len(expand(spec))
    except ValidationError as exc:
        fail(validation_message(exc))
    except ValueError as exc:
        fail(str(exc))
    if not trace.exists():
        fail(f"trace not found: {trace}")
    tgt = spec.objectives
    if loads_asked is not None and tgt.target_load not in loads_asked:
        err_console.print(f"note: the target load {tgt.target_load:g} is not among the loads asked for; added")
    if spec.hardware is None and any(t > 1 for t in spec.tp) and not spec.tp_profiles:
        err_console.print("[yellow]warning:[/] --tp without --model/--system divides pass times by tp_speedup "
                          "(default 0.9 × TP, an invented figure); name a model and a system for measured prices")
    for why in skipped_layouts(spec):
        err_console.print(f"[yellow]left out[/] {why}")
    if n == 0:
        fail("no deployment of the grid can run (see above)")
    if spec.hardware is not None:
        from dynosim.hardware.spec import HardwareSpec

        err_console.print(f"pricing every pass from the database: "
                          f"{HardwareSpec(**{**spec.hardware, 'tp': 1}).label().replace(' TP1', '')}")
    err_console.print(f"sweep: {n} points ({spec.repeats} seed(s) each) on {trace} → {out}")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console) as bar:
        task = bar.add_task("points", total=n)
        try:
            res = sweep_api(trace, spec, out, executor=executor, jobs=jobs, limit=limit, ray_address=ray_address,
                            fresh=fresh, progress=lambda done, total: bar.update(task, completed=done),
                            note=lambda msg: err_console.print(f"note: {msg}"))
        except TraceError as exc:
            fail(str(exc))
        except PointError as exc:
            fail(f"{exc} ({kept(out)}; run the same command to resume once the cause is fixed)")
        except SweepStopped as exc:
            err_console.print(f"[bold red]error:[/] sweep {exc} ({kept(out)}; run the same command to resume)")
            raise typer.Exit(128 + exc.signum) from None
        except KeyboardInterrupt:
            err_console.print(f"[bold red]error:[/] sweep interrupted ({kept(out)}; run the same command to resume)")
            raise typer.Exit(130) from None
        except (ValueError, OSError) as exc:
            fail(str(exc))
    err_console.print(f"ran {res.ran} point(s), {n - res.ran} from the store")
    print_recommendation(res, top)
    console.print(f"wrote {out}/recommendation.json, points.csv, pareto.csv, pareto.png, pareto_<load>.png, "
                  "results.parquet")
    if not no_report:
        from dynosim.cli.report import write_default_report

        if write_default_report(out) is not None:
            console.print(f"wrote {out}/report.html")
    if not res.feasible:
        raise typer.Exit(EXIT_NOTHING_MEETS)


def kept(out: Path) -> str:
    """How many finished points a stopped sweep left in its folder (they are not run again)."""
    from dynosim.sweeps.store import ResultStore

    try:
        return f"the {len(ResultStore(out))} finished point(s) are kept in {out}"
    except (ValueError, OSError):
        return f"the finished points are kept in {out}"


def print_recommendation(res, top: int) -> None:
    """The answer first, in words; then the per-load table, the losers at the target load, its frontier."""
    from rich.panel import Panel

    from dynosim.sweeps.recommend import load_text

    rec = res.recommendation
    for note in rec.get("trace_notes", []):
        err_console.print(f"[yellow]warning:[/] {rec['trace']}: {note}")
    style = "green" if rec["feasible"] else "red"
    console.print(Panel(rec["verdict"], title="recommendation", title_align="left", border_style=style))
    console.print(recommendation_table(rec))
    entry = next((x for x in rec["loads"] if x["load"] == rec["target"]["load"]), None)
    if entry is None:
        return
    if entry["rejected"]:
        console.print(rejected_table(entry, top))
    pts = res.frontier[res.frontier["load"] == entry["load"]]
    if len(pts):
        console.print(frontier_table(pts, top, f"frontier at {load_text(entry['load'], entry['load_kind'])} "
                                               "(TTFT p90 and ITL in ms, goodput req/s)"))


def regress_table(report, n_cases: int) -> Table:
    """One row names each case and its metrics follow, indented: 80 columns keep every name and figure whole."""
    t = Table(title=f"dynosim regress: {n_cases} case(s), {report.regressions} regression(s)")
    t.add_column("case / metric", overflow="fold")
    for c in ("baseline", "current", "change", "tolerance", "status"):
        t.add_column(c, justify="left" if c == "status" else "right", no_wrap=True)
    case = None
    for r in report.table.itertuples(index=False):
        if r.case != case:
            case = r.case
            t.add_row(f"[bold]{case}[/bold]", "", "", "", "", "")
        style = {"REGRESSED": "red", "improved": "green"}.get(r.status)
        nd = row_decimals([r.baseline, r.current], 3)
        t.add_row(f"  {r.metric}", fmt(r.baseline, nd), fmt(r.current, nd), f"{100 * r.change:+.2f}%",
                  f"{100 * r.tolerance:.1f}%", f"[{style}]{r.status}[/{style}]" if style else r.status)
    return t


@app.command()
def regress(
    spec_file: Path = typer.Option(..., "--spec", help="YAML regress spec: cases (trace + RunConfig), metrics, "
                                   "tolerances"),
    baseline: Path = typer.Option(..., "--baseline", help="baseline JSON (committed next to the spec)"),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="write the current figures as the "
                                         "baseline instead of comparing"),
) -> None:
    """Run fixed cases and compare with a baseline: exit 1 when a metric got worse beyond its tolerance."""
    from dynosim.sweeps.regress import check_baseline_target, compare as compare_regress, load_spec, \
        read_baseline, run_cases, write_baseline

    try:
        spec, root = load_spec(spec_file)
        if update_baseline:
            check_baseline_target(baseline)          # before the cases run: their figures are never lost
        base = None if update_baseline else read_baseline(baseline, spec)
        current = run_cases(spec, root)
        if update_baseline:
            write_baseline(baseline, current, spec)
    except TraceError as exc:
        fail(str(exc))
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if update_baseline:
        console.print(f"wrote the baseline for {len(current)} case(s) to {baseline}")
        return
    report = compare_regress(spec, base, current)
    console.print(regress_table(report, len(spec.cases)))
    for r in report.table[report.table["why"] != ""].itertuples(index=False):
        err_console.print(f"[red]{r.case}: {r.metric} regressed: {r.why}[/red]")
    if report.missing:
        err_console.print(f"[red]no baseline for case(s): {', '.join(report.missing)}[/red] "
                          "(run with --update-baseline)")
    raise typer.Exit(report.exit_code)
