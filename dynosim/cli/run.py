"""`dynosim run`: replay a trace through simulated workers and print (or save) what happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from dynosim.api import RunResult, check_output_file, run as run_api
from dynosim.cli.app import app, console, err_console
from dynosim.cli.common import (AcceptRatesOpt, ArrivalSpeedupOpt, HwBackendOpt, HwKvQuantOpt, HwMemUtilOpt,
                                HwModelOpt, HwSystemOpt, HwVersionOpt, HwWeightQuantOpt, LimitOpt,
                                MaxBatchedTokensOpt, MaxNumSeqsOpt, NextnOpt, Preemption, RouterModeOpt, SeedOpt,
                                TimingName, TimingProfileOpt, TraceBlockSizeOpt, TraceOpt, WorkersOpt, accept_rates,
                                fail, fmt, hardware_section, load_run_config, merge, parse_options,
                                validation_message)
from dynosim.config import DisaggConfig, RouterParams, RunConfig
from dynosim.disagg.transfer import TransferConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.traces.mooncake import TraceError


def summary_table(res: RunResult) -> Table:
    s = res.summary
    d = res.config.disagg
    pools = f"{d.prefill_workers}P+{d.decode_workers}D" if d is not None else f"{res.config.workers} workers"
    t = Table(title=f"dynosim run: {s['requests']['completed']}/{s['requests']['total']} requests, "
                    f"{pools}{' (start; planner on)' if res.config.planner else ''}, router {res.config.router_mode}")
    t.add_column("metric")
    for col in ("mean", "p50", "p90", "p95", "p99", "std"):
        t.add_column(col, justify="right")
    names = {"ttft_ms": "TTFT (ms)", "itl_ms": "ITL per request (ms)", "token_gap_ms": "token gap (ms)",
             "e2e_ms": "E2E (ms)", "tps_user": "tokens/s/user"}
    for key, label in names.items():
        d = s[key]
        t.add_row(label, *(fmt(d[c]) for c in ("mean", "p50", "p90", "p95", "p99", "std")))
    return t


def totals_table(res: RunResult) -> Table:
    s = res.summary
    th = s["throughput"]
    t = Table(show_header=False, title="throughput and cache")
    t.add_column("k")
    t.add_column("v", justify="right")
    rows = [
        ("simulated duration (s)", fmt(s["duration_s"], 1)),
        ("requests/s", fmt(th["requests_per_s"], 3)),
        ("output tokens/s", fmt(th["output_tokens_per_s"], 1)),
        ("output tokens/s/GPU", fmt(th["output_tokens_per_s_per_gpu"], 1)),
        ("input tokens/s", fmt(th["input_tokens_per_s"], 1)),
        ("GPU-seconds (mean GPUs)", f"{fmt(s['gpu_seconds'], 0)} ({fmt(s['mean_gpus'], 2)})"),
        (f"goodput req/s (TTFT ≤ {s['goodput']['slo_ttft_ms']:g} ms, ITL ≤ {s['goodput']['slo_itl_ms']:g} ms)",
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
        t.add_column(c, justify="left" if c in ("pool", "why") else "right")
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


def _profile_latencies(profile: str | None) -> dict:
    """The calibrated engine terms a timing profile carries (admission interval, client latency)."""
    if not profile:
        return {}
    from dynosim.engines.mocker.timing import profile_engine_args

    try:
        prof = profile_engine_args(profile)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    return {k: prof[k] for k in ("admit_interval_ms", "client_latency_ms") if k in prof}


@app.command()
def run(
    trace: TraceOpt,
    workers: WorkersOpt = 1,
    prefill_workers: int = typer.Option(0, help="disaggregated: prefill workers (with --decode-workers)"),
    decode_workers: int = typer.Option(0, help="disaggregated: decode workers"),
    kv_transfer_link: Optional[str] = typer.Option(None, help="disaggregated KV hand-off link preset: nvlink, "
                                                   "rdma, tcp (default: from --system, else rdma)"),
    kv_transfer_bandwidth: Optional[float] = typer.Option(None, help="hand-off bandwidth in GB/s (overrides "
                                                          "the preset)"),
    kv_transfer_latency_ms: Optional[float] = typer.Option(None, help="hand-off latency (overrides the preset)"),
    kv_transfer_contention: bool = typer.Option(False, "--kv-transfer-contention/--no-kv-transfer-contention",
                                                help="hand-offs queue on one shared link"),
    router_mode: RouterModeOpt = "round-robin",
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity per worker, in blocks (default: from "
                                                 "memory with --model/--system, else 16384)"),
    block_size: int = typer.Option(64, help="tokens per KV block"),
    max_num_seqs: MaxNumSeqsOpt = 256,
    max_num_batched_tokens: MaxBatchedTokensOpt = 8192,
    timing: Optional[TimingName] = typer.Option(None, help="timing model (default: aic with --model/--system, "
                                                "else polynomial)"),
    timing_profile: TimingProfileOpt = None,
    speedup_ratio: float = typer.Option(1.0, help="divide all modelled durations by this"),
    prefix_caching: bool = typer.Option(True, "--prefix-caching/--no-prefix-caching"),
    chunked_prefill: bool = typer.Option(True, "--chunked-prefill/--no-chunked-prefill"),
    preemption_mode: Preemption = typer.Option("lifo", help="which running request is preempted"),
    gpus_per_worker: Optional[int] = typer.Option(None, help="GPUs per worker, for per-GPU throughput "
                                                  "(without --model/--system; with them it is TP × PP × DP)"),
    model: HwModelOpt = None,
    system: HwSystemOpt = None,
    backend: HwBackendOpt = None,
    backend_version: HwVersionOpt = None,
    tp: Optional[int] = typer.Option(None, help="tensor parallel GPUs per worker (with --model/--system)"),
    pp: Optional[int] = typer.Option(None, help="pipeline parallel stages"),
    ep: Optional[int] = typer.Option(None, help="MoE: expert parallel ranks"),
    dp: Optional[int] = typer.Option(None, help="MoE: attention data-parallel ranks per worker"),
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    gpu_memory_utilization: HwMemUtilOpt = None,
    nextn: NextnOpt = 0,
    nextn_accept_rates: AcceptRatesOpt = None,
    trace_block_size: TraceBlockSizeOpt = 512,
    arrival_speedup: ArrivalSpeedupOpt = 1.0,
    concurrency: Optional[int] = typer.Option(None, help="closed loop: keep N sessions open (the next starts when "
                                              "one ends), ignoring the trace's timestamps"),
    limit: LimitOpt = None,
    router_temperature: float = typer.Option(0.0, help="KV router: 0 = argmin, >0 = softmax sampling"),
    kv_overlap_score_credit: float = typer.Option(1.0, help="KV router: credit per cached prefix block (0..1)"),
    router_prefill_load_scale: float = typer.Option(1.0, help="KV router: weight of the prefill term"),
    router_kv_events: bool = typer.Option(True, "--router-kv-events/--no-router-kv-events",
                                          help="KV router: indexer from engine events, or approximate "
                                               "from its own decisions (TTL)"),
    router_ttl: float = typer.Option(120.0, help="approximate KV router: seconds a decision is remembered"),
    router_tie_break: str = typer.Option("random", help="KV router exact ties: random | tree-size"),
    router_queue_threshold: Optional[float] = typer.Option(
        None, help="queue requests while every worker has more than this × max_num_batched_tokens "
                   "of pending prefill (off by default)"),
    router_queue_policy: str = typer.Option("fcfs", help="router queue order: fcfs | lcfs | wspt"),
    device_types: Optional[str] = typer.Option(None, help="device-aware-weighted: comma list of cpu/cuda "
                                                          "per worker"),
    router_option: list[str] = typer.Option([], "--router-option",
                                            help="policy option KEY=VALUE (repeatable), e.g. variant=generalized"),
    seed: SeedOpt = 0,
    slo_ttft_ms: float = typer.Option(500.0, help="TTFT objective: goodput and the planner's SLA target"),
    slo_itl_ms: float = typer.Option(50.0, help="ITL objective: goodput and the planner's SLA target"),
    planner: bool = typer.Option(False, "--planner/--no-planner", help="autoscale the pools with the planner "
                                 "(the workers given are the starting deployment)"),
    planner_target: str = typer.Option("sla", help="planner optimization target: sla | throughput | latency"),
    planner_predictor: str = typer.Option("arima", help="planner load predictor: constant | moving-average | "
                                          "kalman | arima"),
    planner_gpu_budget: int = typer.Option(16, help="planner: GPUs all pools may hold together"),
    planner_startup_s: float = typer.Option(60.0, help="planner: seconds before a new worker is routable"),
    planner_max_replicas: Optional[int] = typer.Option(None, help="planner: cap per pool"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON deployment (RunConfig fields, e.g. "
                                          "examples/disagg_4p12d.yaml); its fields override the flags"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write summary.json, requests.parquet/csv, "
                                       "timeline.parquet/png (and with a planner replicas.csv/parquet/png) here"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON instead of tables"),
    timeline_points: int = typer.Option(300, help="timeline samples over the run (0: off)"),
    trace_events: Optional[Path] = typer.Option(None, "--trace-events", metavar="FILE.json",
                                                help="write every pass as Perfetto trace-event JSON"),
) -> None:
    """Replay a trace through simulated workers and report latency and throughput."""
    hw = hardware_section(model, system, backend, backend_version, tp, pp, ep, dp, weight_quant, kv_quant,
                          gpu_memory_utilization)
    if hw is None and tp is not None:
        fail("--tp splits a named model over GPUs: give --model and --system (without them, --gpus-per-worker "
             "only counts GPUs)")
    if hw is not None and gpus_per_worker is not None:
        fail("--gpus-per-worker follows from --tp × --pp × --dp when --model/--system are given")
    try:
        engine_fields = dict(block_size=block_size, num_gpu_blocks=num_gpu_blocks, max_num_seqs=max_num_seqs,
                             max_num_batched_tokens=max_num_batched_tokens,
                             timing=timing.value if timing is not None else None,
                             timing_profile=timing_profile, speedup_ratio=speedup_ratio,
                             enable_prefix_caching=prefix_caching, enable_chunked_prefill=chunked_prefill,
                             preemption_mode=preemption_mode.value, hardware=hw,
                             nextn=nextn, nextn_accept_rates=accept_rates(nextn_accept_rates),
                             **_profile_latencies(timing_profile))
        if gpus_per_worker is not None:
            engine_fields["gpus_per_worker"] = gpus_per_worker
        engine = MockerArgs(**{k: v for k, v in engine_fields.items() if v is not None})
        router = RouterParams(
            temperature=router_temperature, overlap_score_credit=kv_overlap_score_credit,
            prefill_load_scale=router_prefill_load_scale, kv_events=router_kv_events, ttl_s=router_ttl,
            tie_break=router_tie_break, queue_threshold=router_queue_threshold, queue_policy=router_queue_policy,
            device_types=[d.strip() for d in device_types.split(",")] if device_types else None,
            policy_options=parse_options(router_option))
        disagg = None
        if prefill_workers or decode_workers:
            if prefill_workers < 1 or decode_workers < 1:
                fail("disaggregated serving needs --prefill-workers >= 1 and --decode-workers >= 1")
            disagg = DisaggConfig(prefill_workers=prefill_workers, decode_workers=decode_workers,
                                  transfer=TransferConfig(link=kv_transfer_link,
                                                          bandwidth_gbps=kv_transfer_bandwidth,
                                                          latency_ms=kv_transfer_latency_ms,
                                                          contention=kv_transfer_contention))
        planner_cfg = PlannerConfig(optimization_target=planner_target, predictor=planner_predictor,
                                    max_gpu_budget=planner_gpu_budget, startup_time_s=planner_startup_s,
                                    max_replicas=planner_max_replicas) if planner else None
        cfg = RunConfig(workers=workers, router_mode=router_mode.value, engine=engine, router=router,
                        trace_block_size=trace_block_size, arrival_speedup=arrival_speedup, seed=seed,
                        disagg=disagg, slo=SloConfig(ttft_ms=slo_ttft_ms, itl_ms=slo_itl_ms), planner=planner_cfg,
                        concurrency=concurrency)
        if config is not None:
            base = json.loads(cfg.model_dump_json())
            if timing is None:  # unset: the file's hardware (if any) decides the timing model
                base["engine"].pop("timing")
            cfg = RunConfig(**merge(base, load_run_config(config)))
    except ValidationError as exc:
        fail(validation_message(exc))
    except ValueError as exc:  # a hardware name or combination (HardwareError)
        fail(str(exc))
    if not trace.exists():
        fail(f"trace not found: {trace}")
    if timeline_points < 0:
        fail(f"--timeline-points: must be >= 0 (0 turns the timeline off), got {timeline_points}")
    if trace_events is not None:
        try:
            check_output_file(trace_events)
        except ValueError as exc:
            fail(f"--trace-events: {exc}")
    try:
        if not as_json:
            err_console.print(f"replaying {trace} on {workers} worker(s) …")
        res = run_api(trace, config=cfg, limit=limit, timeline_points=timeline_points, trace_events=trace_events)
    except TraceError as exc:
        fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if out is not None:
        res.save(out)
    if as_json:
        print(json.dumps(res.summary, indent=2, sort_keys=True))
    else:
        console.print(summary_table(res))
        console.print(totals_table(res))
        if res.replicas is not None:
            console.print(replicas_table(res))
        if out is not None:
            extra = ", timeline.parquet/png" if res.timeline is not None else ""
            extra += ", replicas.csv/parquet/png" if res.replicas is not None else ""
            console.print(f"wrote {out}/summary.json, requests.parquet, requests.csv{extra}")
        if trace_events is not None:
            path, n = res.extra["trace_events"]
            console.print(f"wrote {path} ({n:,} passes; open it in https://ui.perfetto.dev)")
