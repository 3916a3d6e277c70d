"""`dynosim run`: replay a trace through simulated workers and print (or save) what happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from dynosim.api import RunResult, check_output_dir, check_output_file, run as run_api, strict_json
from dynosim.cli.app import app, console, err_console
from dynosim.cli.common import (P_DEPLOY, P_DISAGG, P_ENGINE, P_HW, P_LOAD, P_OUTPUT, P_PLANNER, P_ROUTER, P_SLO,
                                P_TIMING, TIMING_HELP, AcceptRatesOpt, ArrivalSpeedupOpt, HwBackendOpt, HwKvQuantOpt,
                                HwMemUtilOpt, HwModelOpt, HwSystemOpt, HwVersionOpt, HwWeightQuantOpt, LimitOpt,
                                MaxBatchedTokensOpt, MaxNumSeqsOpt, NextnOpt, Preemption, RouterModeOpt, SeedOpt,
                                TimingName, TimingProfileOpt, TraceBlockSizeOpt, TraceOpt, WorkersOpt, accept_rates,
                                fail, given_flags, hardware_section, load_run_config, merge, parse_options,
                                refuse, validation_message, warn_overridden)
from dynosim.cli.run_tables import replicas_table, summary_table, totals_table
from dynosim.config import RouterParams, RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.router.policies import check_policy_options
from dynosim.router.queue import QUEUE_POLICIES
from dynosim.traces.mooncake import TraceError


EXIT_FAILED_REQUESTS = 5


def failed_requests(res: RunResult, allow: bool) -> None:
    """Say so when requests failed or never finished, and exit 5 unless ``--allow-failures``."""
    r = res.summary["requests"]
    bad = r["failed"] + r["unfinished"]
    if not bad:
        return
    rows = res.requests.loc[res.requests["status"] != "done", ["status", "failure"]]
    why = "; ".join(f"{len(g)} {kind}" + (f", e.g. {g['failure'].iloc[0]}" if g["failure"].iloc[0] else "")
                    for kind, g in rows.groupby("status", sort=True))
    err_console.print(f"[bold red]{bad} of {r['total']} requests did not complete[/] ({why}); the figures above "
                      "cover the completed ones only" + ("" if allow else "; exit 5 (--allow-failures: exit 0)"))
    if not allow:
        raise typer.Exit(EXIT_FAILED_REQUESTS)


def _profile_latencies(profile: str | None) -> dict:
    """The calibrated engine terms a timing profile carries (admission interval, client latency)."""
    if not profile:
        return {}
    from dynosim.engines.mocker.timing import profile_engine_args

    try:
        prof = profile_engine_args(profile)
    except (ValueError, FileNotFoundError) as exc:
        fail(f"--timing-profile: {exc}")
    return {k: prof[k] for k in ("admit_interval_ms", "client_latency_ms") if k in prof}


_TRANSFER_FLAGS = ("kv_transfer_link", "kv_transfer_bandwidth", "kv_transfer_latency_ms", "kv_transfer_contention")
_PLANNER_FLAGS = ("planner_target", "planner_predictor", "planner_gpu_budget", "planner_startup_s",
                  "planner_max_replicas")
# router flags that set a policy's own options (the policy declares which it reads)
_POLICY_FLAGS = {"router_temperature": "temperature", "kv_overlap_score_credit": "overlap_score_credit",
                 "router_prefill_load_scale": "prefill_load_scale", "router_tie_break": "tie_break",
                 "device_types": "device_types"}
_POLICY_FLAG_OF = {"temperature": "--router-temperature", "overlap_score_credit": "--kv-overlap-score-credit",
                   "prefill_load_scale": "--router-prefill-load-scale", "tie_break": "--router-tie-break",
                   "device_types": "--device-types"}


def check_run_flags(given: dict[str, str], cfg: RunConfig, file_fields: dict, config: Path | None) -> None:
    """Refuse the flags that would do nothing in the deployment ``cfg`` describes; say which the file overrides."""
    from dynosim.engines.mocker.timing import PROFILE_TIMINGS
    from dynosim.router.policies import POLICIES

    if cfg.disagg is None:
        refuse(given, _TRANSFER_FLAGS, "without disaggregation: add --prefill-workers and --decode-workers "
                                       "(or a disagg section in --config)")
    else:
        refuse(given, ["workers"], "with disaggregation: the pools are --prefill-workers and --decode-workers")
    if cfg.planner is None:
        refuse(given, _PLANNER_FLAGS, "without the planner: add --planner (or a planner section in --config)")
    mode = cfg.router_mode
    policy = POLICIES[mode]
    for name, option in _POLICY_FLAGS.items():
        if option not in policy.options:
            readers = " and ".join(m for m, cls in POLICIES.items() if option in getattr(cls, "options", ()))
            refuse(given, [name], f"with --router-mode {mode} (only the {readers} router reads it)")
    if not policy.uses_overlap:
        refuse(given, ["no_router_kv_events", "router_ttl"],
               f"with --router-mode {mode}: it keeps no KV index (kv and thompson do)")
    elif cfg.router.kv_events:
        refuse(given, ["router_ttl"], "while the router indexes engine KV events: the TTL is the approximate "
                                      "indexer's (--no-router-kv-events)")
    if cfg.router.queue_threshold is None:
        refuse(given, ["router_queue_policy"], "without --router-queue-threshold (no queue)")
    eng = cfg.engine
    if eng.timing_profile and eng.timing not in PROFILE_TIMINGS:
        fail(f"--timing-profile has no effect with timing model {eng.timing} (profiles are read by "
             f"{', '.join(PROFILE_TIMINGS)})")
    if config is not None:
        warn_overridden(given, file_fields, config)


@app.command()
def run(
    ctx: typer.Context,
    trace: TraceOpt,
    trace_block_size: TraceBlockSizeOpt = 512,
    arrival_speedup: ArrivalSpeedupOpt = 1.0,
    concurrency: Optional[int] = typer.Option(None, help="closed loop: keep N sessions open (the next starts when "
                                              "one ends), ignoring the trace's timestamps", rich_help_panel=P_LOAD),
    limit: LimitOpt = None,
    workers: WorkersOpt = 1,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON deployment (RunConfig fields, e.g. "
                                          "examples/disagg_4p12d.yaml); its fields override the flags",
                                          rich_help_panel=P_DEPLOY),
    gpus_per_worker: Optional[int] = typer.Option(None, help="GPUs per worker, for per-GPU throughput "
                                                  "(without --model/--system; with them it is TP × PP × DP)",
                                                  rich_help_panel=P_DEPLOY),
    prefill_workers: int = typer.Option(0, help="prefill workers (with --decode-workers)", rich_help_panel=P_DISAGG),
    decode_workers: int = typer.Option(0, help="decode workers (with --prefill-workers)", rich_help_panel=P_DISAGG),
    kv_transfer_link: Optional[str] = typer.Option(None, help="KV hand-off link preset: nvlink, rdma, tcp "
                                                   "(default: from --system, else rdma)", rich_help_panel=P_DISAGG),
    kv_transfer_bandwidth: Optional[float] = typer.Option(None, help="hand-off GB/s (overrides the preset)",
                                                          rich_help_panel=P_DISAGG),
    kv_transfer_latency_ms: Optional[float] = typer.Option(None, help="hand-off latency (overrides the preset)",
                                                           rich_help_panel=P_DISAGG),
    kv_transfer_contention: bool = typer.Option(False, "--kv-transfer-contention", rich_help_panel=P_DISAGG,
                                                help="hand-offs queue on one shared link"),
    model: HwModelOpt = None,
    system: HwSystemOpt = None,
    backend: HwBackendOpt = None,
    backend_version: HwVersionOpt = None,
    tp: Optional[int] = typer.Option(None, help="tensor parallel GPUs per worker", rich_help_panel=P_HW),
    pp: Optional[int] = typer.Option(None, help="pipeline parallel stages", rich_help_panel=P_HW),
    ep: Optional[int] = typer.Option(None, help="MoE: expert parallel ranks", rich_help_panel=P_HW),
    dp: Optional[int] = typer.Option(None, help="MoE: attention data-parallel ranks per worker",
                                     rich_help_panel=P_HW),
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    gpu_memory_utilization: HwMemUtilOpt = None,
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity per worker, in blocks (default: from "
                                                 "memory with --model/--system, else 16384)",
                                                 rich_help_panel=P_ENGINE),
    block_size: int = typer.Option(64, help="tokens per KV block", rich_help_panel=P_ENGINE),
    max_num_seqs: MaxNumSeqsOpt = 256,
    max_num_batched_tokens: MaxBatchedTokensOpt = 8192,
    no_prefix_caching: bool = typer.Option(False, "--no-prefix-caching", help="turn prefix caching off",
                                           rich_help_panel=P_ENGINE),
    no_chunked_prefill: bool = typer.Option(False, "--no-chunked-prefill", help="turn chunked prefill off",
                                            rich_help_panel=P_ENGINE),
    preemption_mode: Preemption = typer.Option("lifo", help="which running request is preempted",
                                               rich_help_panel=P_ENGINE),
    nextn: NextnOpt = 0,
    nextn_accept_rates: AcceptRatesOpt = None,
    timing: Optional[TimingName] = typer.Option(None, metavar="<name>", rich_help_panel=P_TIMING,
                                                help=f"{TIMING_HELP} (default: aic with --model/--system, "
                                                     "else polynomial)"),
    timing_profile: TimingProfileOpt = None,
    speedup_ratio: float = typer.Option(1.0, help="divide all modelled durations by this", rich_help_panel=P_TIMING),
    router_mode: RouterModeOpt = "round-robin",
    seed: SeedOpt = 0,
    router_temperature: float = typer.Option(0.0, help="KV router: 0 = argmin, >0 = softmax sampling",
                                             rich_help_panel=P_ROUTER),
    kv_overlap_score_credit: float = typer.Option(1.0, help="KV router: credit per cached prefix block (0..1)",
                                                  rich_help_panel=P_ROUTER),
    router_prefill_load_scale: float = typer.Option(1.0, help="KV router: weight of the prefill term",
                                                    rich_help_panel=P_ROUTER),
    router_tie_break: str = typer.Option("random", help="KV router exact ties: random | tree-size",
                                         rich_help_panel=P_ROUTER),
    no_router_kv_events: bool = typer.Option(False, "--no-router-kv-events", rich_help_panel=P_ROUTER,
                                             help="KV index from the router's own decisions (TTL), not from "
                                                  "engine KV events"),
    router_ttl: float = typer.Option(120.0, help="with --no-router-kv-events: seconds a decision is remembered",
                                     rich_help_panel=P_ROUTER),
    router_queue_threshold: Optional[float] = typer.Option(
        None, help="queue requests while every worker has more than this × max_num_batched_tokens "
                   "of pending prefill (off by default)", rich_help_panel=P_ROUTER),
    router_queue_policy: str = typer.Option("fcfs", help=f"queue order: {' | '.join(QUEUE_POLICIES)}",
                                            rich_help_panel=P_ROUTER),
    device_types: Optional[str] = typer.Option(None, help="device-aware-weighted: comma list of cpu/cuda "
                                                          "per worker", rich_help_panel=P_ROUTER),
    router_option: list[str] = typer.Option([], "--router-option", metavar="<key=value>", rich_help_panel=P_ROUTER,
                                            help="policy option (repeatable), e.g. variant=generalized"),
    planner: bool = typer.Option(False, "--planner", help="autoscale the pools with the planner "
                                 "(the workers given are the starting deployment)", rich_help_panel=P_PLANNER),
    planner_target: str = typer.Option("sla", help="optimization target: sla | throughput | latency",
                                       rich_help_panel=P_PLANNER),
    planner_predictor: str = typer.Option("arima", help="load predictor: constant | moving-average | "
                                          "kalman | arima", rich_help_panel=P_PLANNER),
    planner_gpu_budget: int = typer.Option(16, help="GPUs all pools may hold together", rich_help_panel=P_PLANNER),
    planner_startup_s: float = typer.Option(60.0, help="seconds before a new worker is routable",
                                            rich_help_panel=P_PLANNER),
    planner_max_replicas: Optional[int] = typer.Option(None, help="cap per pool", rich_help_panel=P_PLANNER),
    slo_ttft_ms: float = typer.Option(500.0, help="TTFT objective: goodput and the planner's SLA target",
                                      rich_help_panel=P_SLO),
    slo_itl_ms: float = typer.Option(50.0, help="ITL objective: goodput and the planner's SLA target",
                                     rich_help_panel=P_SLO),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write summary.json, requests.parquet/csv, "
                                       "timeline.parquet/png (and with a planner replicas.csv/parquet/png) here", rich_help_panel=P_OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON instead of tables",
                                 rich_help_panel=P_OUTPUT),
    no_report: bool = typer.Option(False, "--no-report", help="with --out: skip report.html",
                                   rich_help_panel=P_OUTPUT),
    allow_failures: bool = typer.Option(False, "--allow-failures", help="exit 0 even when requests failed "
                                        "(default: exit 5)", rich_help_panel=P_OUTPUT),
    timeline_points: int = typer.Option(300, help="timeline samples over the run (0: off)",
                                        rich_help_panel=P_OUTPUT),
    trace_events: Optional[Path] = typer.Option(None, "--trace-events", metavar="FILE.json",
                                                help="write every pass as Perfetto trace-event JSON",
                                                rich_help_panel=P_OUTPUT),
) -> None:
    """Replay a trace through simulated workers and report latency and throughput."""
    given = given_flags(ctx)
    hw = hardware_section(model, system, backend, backend_version, tp, pp, ep, dp, weight_quant, kv_quant,
                          gpu_memory_utilization)
    if hw is None and tp is not None:
        fail("--tp splits a named model over GPUs: give --model and --system (without them, --gpus-per-worker "
             "only counts GPUs)")
    if hw is not None and gpus_per_worker is not None:
        fail("--gpus-per-worker follows from --tp × --pp × --dp when --model/--system are given")
    file_fields = load_run_config(config) if config is not None else {}
    if nextn_accept_rates is not None and not nextn and not (file_fields.get("engine") or {}).get("nextn"):
        refuse(given, ["nextn_accept_rates"], "without --nextn (speculative decoding is off)")
    if (prefill_workers or decode_workers) and (prefill_workers < 1 or decode_workers < 1):
        fail("disaggregated serving needs --prefill-workers >= 1 and --decode-workers >= 1")
    try:
        engine_fields = dict(block_size=block_size, num_gpu_blocks=num_gpu_blocks, max_num_seqs=max_num_seqs,
                             max_num_batched_tokens=max_num_batched_tokens,
                             timing=timing.value if timing is not None else None,
                             timing_profile=timing_profile, speedup_ratio=speedup_ratio,
                             enable_prefix_caching=not no_prefix_caching,
                             enable_chunked_prefill=not no_chunked_prefill,
                             preemption_mode=preemption_mode.value, hardware=hw,
                             nextn=nextn, nextn_accept_rates=accept_rates(nextn_accept_rates),
                             **_profile_latencies(timing_profile))
        if gpus_per_worker is not None:
            engine_fields["gpus_per_worker"] = gpus_per_worker
        engine = MockerArgs(**{k: v for k, v in engine_fields.items() if v is not None})
        router = RouterParams(
            temperature=router_temperature, overlap_score_credit=kv_overlap_score_credit,
            prefill_load_scale=router_prefill_load_scale, kv_events=not no_router_kv_events, ttl_s=router_ttl,
            tie_break=router_tie_break, queue_threshold=router_queue_threshold, queue_policy=router_queue_policy,
            device_types=[d.strip() for d in device_types.split(",")] if device_types else None)
        cfg = RunConfig(workers=workers, router_mode=router_mode.value, engine=engine, router=router,
                        trace_block_size=trace_block_size, arrival_speedup=arrival_speedup, seed=seed,
                        slo=SloConfig(ttft_ms=slo_ttft_ms, itl_ms=slo_itl_ms), concurrency=concurrency)
        fields = json.loads(cfg.model_dump_json())
        if timing is None:  # unset: the engine's hardware (the file's, if any) decides the timing model
            fields["engine"].pop("timing")
        # the flags fill in what a --config file's disagg and planner sections leave unsaid
        if prefill_workers or decode_workers or file_fields.get("disagg") is not None:
            transfer = {"link": kv_transfer_link, "bandwidth_gbps": kv_transfer_bandwidth,
                        "latency_ms": kv_transfer_latency_ms, "contention": kv_transfer_contention}
            fields["disagg"] = {"transfer": {k: v for k, v in transfer.items() if v is not None}}
            if prefill_workers:
                fields["disagg"].update(prefill_workers=prefill_workers, decode_workers=decode_workers)
        if planner or file_fields.get("planner") is not None:
            fields["planner"] = PlannerConfig(optimization_target=planner_target, predictor=planner_predictor,
                                              max_gpu_budget=planner_gpu_budget, startup_time_s=planner_startup_s,
                                              max_replicas=planner_max_replicas).model_dump()
        policy_options = parse_options(router_option)
        for key, flag in _POLICY_FLAG_OF.items():
            if key in policy_options:
                fail(f"--router-option {key}: set it with {flag} (one way to say it)")
        if policy_options:
            fields["router"]["policy_options"] = policy_options
            mode = file_fields.get("router_mode", router_mode.value)
            try:
                check_policy_options(mode, policy_options)
            except ValueError as exc:
                fail(f"--router-option: {exc}")
        cfg = RunConfig(**merge(fields, file_fields))
    except ValidationError as exc:
        fail(validation_message(exc))
    except ValueError as exc:  # a hardware name or combination (HardwareError)
        fail(str(exc))
    check_run_flags(given, cfg, file_fields, config)
    if out is None:
        refuse(given, ["no_report"], "without --out (nothing is written)")
    if not trace.exists():
        fail(f"trace not found: {trace}")
    if timeline_points < 0:
        fail(f"--timeline-points: must be >= 0 (0 turns the timeline off), got {timeline_points}")
    if out is not None:
        try:
            check_output_dir(out)
        except ValueError as exc:
            fail(f"--out: {exc}")
    if trace_events is not None:
        try:
            check_output_file(trace_events)
        except ValueError as exc:
            fail(f"--trace-events: {exc}")
    try:
        if not as_json:
            pools = f"{cfg.disagg.prefill_workers}P+{cfg.disagg.decode_workers}D" if cfg.disagg is not None \
                else f"{cfg.workers} worker(s)"
            err_console.print(f"replaying {trace} on {pools} …")
        res = run_api(trace, config=cfg, limit=limit, timeline_points=timeline_points, trace_events=trace_events)
        for note in res.summary["run"]["trace_notes"]:
            err_console.print(f"[yellow]warning:[/] {trace}: {note}")
    except TraceError as exc:
        fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if out is not None:
        res.save(out)
        if not no_report:
            from dynosim.cli.report import write_default_report

            write_default_report(out)
    if as_json:
        print(json.dumps(strict_json(res.summary), indent=2, sort_keys=True, allow_nan=False))
    else:
        console.print(summary_table(res))
        console.print(totals_table(res))
        if res.replicas is not None:
            console.print(replicas_table(res))
        if out is not None:
            extra = ", timeline.parquet/png" if res.timeline is not None else ""
            extra += ", replicas.csv/parquet/png" if res.replicas is not None else ""
            extra += ", report.html" if (out / "report.html").exists() and not no_report else ""
            console.print(f"wrote {out}/summary.json, requests.parquet, requests.csv{extra}")
        if trace_events is not None:
            path, n = res.extra["trace_events"]
            console.print(f"wrote {path} ({n:,} passes; open it in https://ui.perfetto.dev)")
    failed_requests(res, allow_failures)
