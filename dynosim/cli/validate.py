"""`dynosim validate`: the same trace on live engines and in the simulator, measured vs predicted per metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from dynosim.cli.app import app, console, err_console
from dynosim.cli.common import (P_ATTACH, P_COMPARE, P_DEPLOY, P_ENGINE, P_LAUNCH, P_LIVE, P_OUTPUT, IdleTimeoutOpt,
                                P_ROUTER, P_TIMING, TIMING_HELP, ArrivalSpeedupOpt, BasePortOpt, DeviceOpt,
                                EngineArgOpt, EnginePythonOpt, HwBackendOpt, HwKvQuantOpt, HwMemUtilOpt, HwSystemOpt,
                                HwVersionOpt, HwWeightQuantOpt, LaunchEngine, LimitOpt, MaxBatchedTokensOpt,
                                MaxModelLenOpt, MaxNumSeqsOpt, ModelOpt, NextnOpt, RouterModeOpt, SeedOpt,
                                ServedModelNameOpt, StartupTimeoutOpt, TimingName, TimingProfileOpt,
                                TraceBlockSizeOpt, TraceOpt, VocabSizeOpt, WorkersOpt, fail, fmt, given_flags,
                                hardware_section, idle_seconds, load_run_config, merge, refuse, row_decimals,
                                validation_message, warn_overridden)
from dynosim.config import RouterParams, RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.traces.mooncake import TraceError

_LAUNCH_FLAGS = ("device", "engine_python", "max_model_len", "base_port", "events_base_port", "no_match_kv_capacity",
                 "startup_timeout", "engine_arg", "prefill_workers", "decode_workers")
_ATTACH_FLAGS = ("kv_events", "decode_endpoint")


@app.command()
def validate(
    ctx: typer.Context,
    trace: TraceOpt,
    trace_block_size: TraceBlockSizeOpt = 512,
    arrival_speedup: ArrivalSpeedupOpt = 1.0,
    limit: LimitOpt = None,
    launch: Optional[LaunchEngine] = typer.Option(None, help="start the servers: vllm (CPU or CUDA) or sglang",
                                                  rich_help_panel=P_LIVE),
    endpoint: list[str] = typer.Option([], "--endpoint", metavar="<url>", rich_help_panel=P_LIVE,
                                       help="attach to a running server (once per worker; with --decode-endpoint "
                                            "the prefill servers)"),
    model: ModelOpt = "",
    served_model_name: ServedModelNameOpt = None,
    request_timeout: float = typer.Option(600.0, help="seconds one request may take", rich_help_panel=P_LIVE),
    idle_timeout: float = IdleTimeoutOpt,
    vocab_size: VocabSizeOpt = 2048,
    kv_events: list[str] = typer.Option([], "--kv-events", metavar="<zmq>", rich_help_panel=P_ATTACH,
                                        help="ZMQ endpoint each engine publishes KV events to (we bind it), once "
                                             "per --endpoint, for a router that indexes them"),
    decode_endpoint: list[str] = typer.Option([], "--decode-endpoint", metavar="<url>", rich_help_panel=P_ATTACH,
                                              help="disaggregated: a decode server (once each)"),
    device: DeviceOpt = "cpu",
    engine_python: EnginePythonOpt = None,
    max_model_len: MaxModelLenOpt = 2048,
    base_port: BasePortOpt = 18000,
    events_base_port: int = typer.Option(18500, help="first KV-event port", rich_help_panel=P_LAUNCH),
    no_match_kv_capacity: bool = typer.Option(False, "--no-match-kv-capacity", rich_help_panel=P_LAUNCH,
                                              help="leave the engines' KV capacity alone (default: "
                                                   "--num-gpu-blocks-override = the simulated capacity)"),
    startup_timeout: StartupTimeoutOpt = 600.0,
    engine_arg: EngineArgOpt = [],
    workers: WorkersOpt = 1,
    prefill_workers: int = typer.Option(0, help="disaggregated launch: prefill workers (the router's pool; "
                                        "or a disagg section in --config)", rich_help_panel=P_DEPLOY),
    decode_workers: int = typer.Option(0, help="disaggregated launch: decode workers fed over NIXL",
                                       rich_help_panel=P_DEPLOY),
    gpus_per_worker: int = typer.Option(1, help="GPUs (tensor parallel) per worker: launched with --device cuda, "
                                        "priced with --system", rich_help_panel=P_DEPLOY),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON of RunConfig fields (overrides the flags); a "
                                          "disagg section launches (or attaches to) prefill and decode pools",
                                          rich_help_panel=P_DEPLOY),
    router_mode: RouterModeOpt = "kv",
    no_router_kv_events: bool = typer.Option(False, "--no-router-kv-events", rich_help_panel=P_ROUTER,
                                             help="KV router: approximate the cache from its own decisions "
                                                  "instead of indexing the engines' KV events"),
    seed: SeedOpt = 0,
    block_size: Optional[int] = typer.Option(None, help="KV block size (default: the timing profile's, else 32)",
                                             rich_help_panel=P_ENGINE),
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity per worker in blocks "
                                                 "(default: the timing profile's, else 16384)",
                                                 rich_help_panel=P_ENGINE),
    max_num_seqs: MaxNumSeqsOpt = 256,
    max_num_batched_tokens: MaxBatchedTokensOpt = 2048,
    nextn: NextnOpt = 0,
    timing: Optional[TimingName] = typer.Option(None, metavar="<name>", rich_help_panel=P_TIMING,
                                                help=f"{TIMING_HELP} (default: aic with --system, else "
                                                     "interpolated)"),
    timing_profile: TimingProfileOpt = None,
    admit_interval_ms: Optional[float] = typer.Option(None, help="simulated engine: requests admitted this far "
                                                      "apart (default: the timing profile's, else 0)",
                                                      rich_help_panel=P_TIMING),
    client_latency_ms: Optional[float] = typer.Option(None, help="simulated engine: fixed delay from a token to "
                                                      "the client (default: the timing profile's, else 0)",
                                                      rich_help_panel=P_TIMING),
    system: HwSystemOpt = None,
    backend: HwBackendOpt = None,
    backend_version: HwVersionOpt = None,
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    gpu_memory_utilization: HwMemUtilOpt = None,
    tolerance: float = typer.Option(0.10, help="relative error allowed on gated metrics", rich_help_panel=P_COMPARE),
    reuse_tolerance: float = typer.Option(0.02, help="absolute difference allowed on prefix reuse",
                                          rich_help_panel=P_COMPARE),
    out: Path = typer.Option(Path("runs/validate"), "--out", "-o", help="output folder", rich_help_panel=P_OUTPUT),
) -> None:
    """Replay a trace on live engines, simulate the same deployment, and compare per metric.

    Exit status: 0 within tolerance, 1 a gated metric is out of tolerance, 3 the live run
    lost requests (failures, timeouts, a dead or unreachable server, Ctrl-C), 2 bad input.
    """
    from dynosim.engines.live.kv_events import check_endpoint as check_kv_endpoint
    from dynosim.engines.mocker.timing import PROFILE_TIMINGS, profile_engine_args, timing_for
    from dynosim.router.policies import POLICIES
    from dynosim.traces.mooncake import load_trace
    from dynosim.validate.servers import ServerError
    from dynosim.validate.live_deployment import check_attach_counts, live_disagg
    from dynosim.validate.workflow import ValidateOptions, validate as validate_api

    given = given_flags(ctx)
    if launch is None and not endpoint:
        fail("give --launch vllm (start servers) or --endpoint URL (attach), once per worker")
    idle_s = idle_seconds(idle_timeout)
    for ep in kv_events:
        try:
            check_kv_endpoint(ep)
        except ValueError as exc:
            fail(f"--kv-events {ep}: {exc}")
    if launch is not None and endpoint:
        fail("--launch and --endpoint exclude each other")
    if launch is not None:
        refuse(given, _ATTACH_FLAGS, "with --launch: they attach to running servers (--endpoint)")
    else:
        refuse(given, _LAUNCH_FLAGS, "when attaching (--endpoint): they set up launched servers (--launch); "
                                     "the attached servers' counts come from --endpoint and --decode-endpoint")
        refuse(given, ["workers"], "when attaching: there is one worker per --endpoint")
    if launch is not None and device.value != "cuda" and system is None:
        refuse(given, ["gpus_per_worker"], "with --device cpu and no --system (nothing runs or is priced on GPUs)")
    if launch is None and system is None:
        refuse(given, ["gpus_per_worker"], "when attaching without --system (it prices the model on GPUs)")
    # the deployment's pools, as `run` takes them: --workers, or --prefill-workers/--decode-workers (attached:
    # one --endpoint per worker, --decode-endpoint per decode worker); a --config file's values win
    if launch is None:
        workers = len(endpoint)
        prefill_workers, decode_workers = (len(endpoint), len(decode_endpoint)) if decode_endpoint else (0, 0)
    elif decode_workers:
        if prefill_workers < 1:
            fail("a disaggregated launch needs --prefill-workers >= 1 and --decode-workers >= 1")
        refuse(given, ["workers"], "in a disaggregated launch: the router's pool is --prefill-workers")
    elif prefill_workers:
        fail("--prefill-workers needs --decode-workers (or --decode-endpoint)")
    try:
        prof = profile_engine_args(timing_profile) if timing_profile else {}
    except (ValueError, FileNotFoundError) as exc:
        fail(f"--timing-profile: {exc}")
    hw = None
    if system is not None:  # the prediction prices the launched model (--model: database id or directory) on it
        hw = hardware_section(model or None, system, backend, backend_version, gpus_per_worker, None, None, None,
                              weight_quant, kv_quant, gpu_memory_utilization)
    else:
        hardware_section(None, None, backend, backend_version, None, None, None, None, weight_quant, kv_quant,
                         gpu_memory_utilization)
    timing_name = timing.value if timing is not None else ("aic" if hw is not None else "interpolated")
    blocks = num_gpu_blocks or prof.get("num_gpu_blocks") or (None if hw is not None else 16384)
    file_fields = load_run_config(config) if config is not None else {}
    try:
        if decode_workers:  # pools from the flags: the hand-off is the model's, over tcp, unless the file says
            disagg = {"prefill_workers": prefill_workers, "decode_workers": decode_workers}
            if file_fields.get("disagg") is None:
                disagg = live_disagg(prefill_workers, decode_workers, model, device.value).model_dump()
        fields = dict(workers=workers, router_mode=router_mode.value, seed=seed, trace_block_size=trace_block_size,
                      arrival_speedup=arrival_speedup,
                      router=RouterParams(kv_events=not no_router_kv_events),
                      engine=MockerArgs(block_size=block_size or prof.get("block_size", 32),
                                        num_gpu_blocks=blocks, hardware=hw, nextn=nextn,
                                        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                        timing=timing_name, timing_profile=timing_profile,
                                        admit_interval_ms=admit_interval_ms if admit_interval_ms is not None
                                        else prof.get("admit_interval_ms", 0.0),
                                        client_latency_ms=client_latency_ms if client_latency_ms is not None
                                        else prof.get("client_latency_ms", 0.0)))
        if decode_workers:
            fields["disagg"] = disagg
        if config is not None:
            base = json.loads(RunConfig(**fields).model_dump_json())
            if timing is None and (file_fields.get("engine") or {}).get("hardware"):
                base["engine"].pop("timing")   # the file's hardware decides the timing model
            fields = merge(base, file_fields)
        cfg = RunConfig(**fields)
        if launch is None:  # attached: one endpoint per worker of each of the deployment's pools
            check_attach_counts(cfg, ValidateOptions(out=out, endpoints=list(endpoint),
                                                     decode_endpoints=list(decode_endpoint)))
    except ValidationError as exc:
        fail(validation_message(exc))
    except ValueError as exc:
        fail(str(exc))
    if launch is not None and cfg.disagg is not None:
        refuse(given, ["workers"], "in a disaggregated launch: the router's pool is --prefill-workers")
    policy = POLICIES[cfg.router_mode]
    if not policy.uses_overlap:
        refuse(given, ["no_router_kv_events", "kv_events"],
               f"with --router-mode {cfg.router_mode}: it keeps no KV index (kv and thompson do)")
    elif not cfg.router.kv_events:
        refuse(given, ["kv_events"], "with --no-router-kv-events (the router does not read KV events)")
    if cfg.engine.timing_profile and cfg.engine.timing not in PROFILE_TIMINGS:
        fail(f"--timing-profile has no effect with timing model {cfg.engine.timing} (profiles are read by "
             f"{', '.join(PROFILE_TIMINGS)})")
    if cfg.engine.timing_profile:  # the prediction's profile is read now, not after the live run
        try:
            timing_for(cfg.engine)
        except (ValueError, FileNotFoundError) as exc:
            fail(f"--timing-profile: {exc}")
    if config is not None:
        warn_overridden(given, file_fields, config)
    if not trace.exists():
        fail(f"trace not found: {trace}")
    try:
        tr = load_trace(trace, trace_block_size=cfg.trace_block_size, speedup=cfg.arrival_speedup, limit=limit)
    except TraceError as exc:
        fail(str(exc))
    opts = ValidateOptions(out=out, model=model, served_model_name=served_model_name,
                           launch=launch.value if launch else None, endpoints=list(endpoint),
                           kv_event_endpoints=list(kv_events), device=device.value, engine_python=engine_python,
                           base_port=base_port, events_base_port=events_base_port, gpus_per_worker=gpus_per_worker,
                           max_model_len=max_model_len, match_kv_capacity=not no_match_kv_capacity,
                           startup_timeout_s=startup_timeout, request_timeout_s=request_timeout,
                           idle_timeout_s=idle_s, vocab_size=vocab_size, tolerance=tolerance,
                           reuse_tolerance=reuse_tolerance,
                           extra_engine_args=tuple(engine_arg), decode_endpoints=list(decode_endpoint))
    try:
        res = validate_api(tr, cfg, opts, say=lambda m: err_console.print(m))
    except ServerError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # outside the replay (starting servers, simulating); in it, Ctrl-C keeps the data
        kept = f"; what was measured is in {out}/measured" if (out / "measured" / "summary.json").exists() else ""
        err_console.print(f"[red]error:[/red] interrupted{kept}")
        raise typer.Exit(3)
    console.print(comparison_table(res.table))
    r = res.measured["requests"]
    console.print(f"live: {r['completed']} completed, {r['failed']} failed, {r.get('not_sent', 0)} not sent; "
                  f"prefix reuse from {res.measured.get('prefix_reuse_source')}; wrote {out}/comparison.csv, "
                  "comparison.json, comparison.png, measured/, predicted/")
    if res.measured.get("aborted"):
        err_console.print(f"[red]run aborted:[/red] {res.measured['aborted']}")
    for reason, n in res.measured.get("failure_reasons", {}).items():
        err_console.print(f"[red]failed ×{n}:[/red] {reason}")
    verdict = {0: "[green]PASS[/green]", 1: "[red]FAIL: out of tolerance[/red]",
               3: "[red]INCOMPLETE: requests lost[/red]"}[res.exit_code]
    if res.exit_code == 3 and str(res.measured.get("aborted") or "").startswith("interrupted"):
        verdict = "[red]INCOMPLETE: interrupted (what was measured is written)[/red]"
    console.print(verdict)
    raise typer.Exit(res.exit_code)


def comparison_table(table) -> Table:
    from dynosim.validate.compare import format_error

    t = Table(title="measured vs predicted")
    t.add_column("metric", overflow="fold")  # names wrap in a narrow terminal; figures never get cut
    for col in ("measured", "predicted", "error", "tolerance", ""):
        t.add_column(col, justify="right", no_wrap=True)
    for _, row in table.iterrows():
        mark = "n/a" if row["predicted"] != row["predicted"] else (
            ("ok" if row["ok"] else "[red]OUT[/red]") if row["gated"] else "(info)")
        tol = f"{row['tolerance']:.3f}" if row["error_kind"] == "abs" else f"{100 * row['tolerance']:.0f}%"
        nd = row_decimals([row["measured"], row["predicted"]], 3)
        t.add_row(row["label"], fmt(row["measured"], nd), fmt(row["predicted"], nd), format_error(row), tol, mark)
    return t
