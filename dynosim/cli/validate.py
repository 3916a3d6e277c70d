"""`dynosim validate` and `dynosim calibrate`: live engines measured, and compared with the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from dynosim.cli.app import app, console, err_console
from dynosim.cli.common import (HwBackendOpt, HwKvQuantOpt, HwMemUtilOpt, HwSystemOpt, HwVersionOpt, HwWeightQuantOpt,
                                NextnOpt, hardware_section, ArrivalSpeedupOpt, BasePortOpt, DeviceOpt, EngineArgOpt, EnginePythonOpt, LaunchEngine,
                                LimitOpt, MaxBatchedTokensOpt, MaxModelLenOpt, MaxNumSeqsOpt, ModelOpt, RouterModeOpt,
                                SeedOpt, ServedModelNameOpt, StartupTimeoutOpt, TimingName, TimingProfileOpt,
                                TraceBlockSizeOpt, TraceOpt, VocabSizeOpt, WorkersOpt, fail, fmt, int_list,
                                load_run_config, merge, validation_message)
from dynosim.config import RouterParams, RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.traces.mooncake import TraceError


@app.command()
def validate(
    trace: TraceOpt,
    launch: Optional[LaunchEngine] = typer.Option(None, help="start the servers: vllm (CPU or CUDA) or sglang"),
    endpoint: list[str] = typer.Option([], "--endpoint", help="attach to a running server (once per worker)"),
    kv_events: list[str] = typer.Option([], "--kv-events", help="attach mode: ZMQ endpoint each engine "
                                        "publishes KV events to (we bind it), once per --endpoint"),
    model: ModelOpt = "",
    served_model_name: ServedModelNameOpt = None,
    device: DeviceOpt = "cpu",
    engine_python: EnginePythonOpt = None,
    workers: WorkersOpt = 1,
    prefill_workers: int = typer.Option(0, help="disaggregated: prefill workers (the router's pool)"),
    decode_workers: int = typer.Option(0, help="disaggregated: decode workers fed over NIXL (predicted with the simulator's P/D model)"),
    decode_endpoint: list[str] = typer.Option([], "--decode-endpoint", help="attach, disaggregated: a decode "
                                              "server (once each); --endpoint then lists the prefill servers"),
    router_mode: RouterModeOpt = "kv",
    router_kv_events: bool = typer.Option(True, "--router-kv-events/--no-router-kv-events",
                                          help="KV router: index the engines' KV events (else approximate)"),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON of RunConfig fields (overrides the flags)"),
    block_size: Optional[int] = typer.Option(None, help="KV block size (default: the timing profile's, else 32)"),
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity per worker in blocks "
                                                 "(default: the timing profile's, else 16384)"),
    max_num_seqs: MaxNumSeqsOpt = 256,
    max_num_batched_tokens: MaxBatchedTokensOpt = 2048,
    timing: Optional[TimingName] = typer.Option(None, help="timing model of the prediction (default: aic with "
                                                "--system, else interpolated)"),
    system: HwSystemOpt = None,
    backend: HwBackendOpt = None,
    backend_version: HwVersionOpt = None,
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    gpu_memory_utilization: HwMemUtilOpt = None,
    nextn: NextnOpt = 0,
    timing_profile: TimingProfileOpt = None,
    admit_interval_ms: Optional[float] = typer.Option(None, help="simulated engine: requests admitted this far "
                                                      "apart (default: the timing profile's, else 0)"),
    client_latency_ms: Optional[float] = typer.Option(None, help="simulated engine: fixed delay from a token to "
                                                      "the client (default: the timing profile's, else 0)"),
    trace_block_size: TraceBlockSizeOpt = 512,
    arrival_speedup: ArrivalSpeedupOpt = 1.0,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    max_model_len: MaxModelLenOpt = 2048,
    base_port: BasePortOpt = 18000,
    events_base_port: int = typer.Option(18500, help="first KV-event port of launched servers"),
    gpus_per_worker: int = typer.Option(1, help="CUDA: GPUs (tensor parallel) per worker"),
    match_kv_capacity: bool = typer.Option(True, "--match-kv-capacity/--no-match-kv-capacity",
                                           help="launch with --num-gpu-blocks-override = the simulated capacity"),
    startup_timeout: StartupTimeoutOpt = 600.0,
    request_timeout: float = typer.Option(600.0, help="seconds one request may take"),
    vocab_size: VocabSizeOpt = 2048,
    tolerance: float = typer.Option(0.10, help="relative error allowed on gated metrics"),
    reuse_tolerance: float = typer.Option(0.02, help="absolute difference allowed on prefix reuse"),
    engine_arg: EngineArgOpt = [],
    out: Path = typer.Option(Path("runs/validate"), "--out", "-o", help="output folder"),
) -> None:
    """Replay a trace on live engines, simulate the same deployment, and compare per metric.

    Exit status: 0 within tolerance, 1 a gated metric is out of tolerance, 3 the live run
    lost requests (failures, timeouts, a dead server), 2 bad input.
    """
    from dynosim.engines.mocker.timing import profile_engine_args
    from dynosim.traces.mooncake import load_trace
    from dynosim.validate.servers import ServerError
    from dynosim.validate.workflow import ValidateOptions, validate as validate_api

    if launch is None and not endpoint:
        fail("give --launch vllm (start servers) or --endpoint URL (attach), once per worker")
    if launch is not None and endpoint:
        fail("--launch and --endpoint exclude each other")
    if decode_endpoint:
        decode_workers = len(decode_endpoint)
    if decode_workers:
        if launch is not None and prefill_workers < 1:
            fail("a disaggregated launch needs --prefill-workers >= 1 and --decode-workers >= 1")
        workers = prefill_workers if launch is not None else len(endpoint)
    elif prefill_workers:
        fail("--prefill-workers needs --decode-workers (or --decode-endpoint)")
    if endpoint and workers != len(endpoint) and config is None:
        workers = len(endpoint)
    try:
        prof = profile_engine_args(timing_profile) if timing_profile else {}
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    hw = None
    if system is not None:  # the prediction prices the launched model (--model: database id or directory) on it
        hw = hardware_section(model or None, system, backend, backend_version, gpus_per_worker, None, None, None,
                              weight_quant, kv_quant, gpu_memory_utilization)
    else:
        hardware_section(None, None, backend, backend_version, None, None, None, None, weight_quant, kv_quant,
                         gpu_memory_utilization)
    timing_name = timing.value if timing is not None else ("aic" if hw is not None else "interpolated")
    blocks = num_gpu_blocks or prof.get("num_gpu_blocks") or (None if hw is not None else 16384)
    try:
        fields = dict(workers=workers, router_mode=router_mode.value, seed=seed, trace_block_size=trace_block_size,
                      arrival_speedup=arrival_speedup,
                      router=RouterParams(kv_events=router_kv_events),
                      engine=MockerArgs(block_size=block_size or prof.get("block_size", 32),
                                        num_gpu_blocks=blocks, hardware=hw, nextn=nextn,
                                        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                        timing=timing_name, timing_profile=timing_profile,
                                        admit_interval_ms=admit_interval_ms if admit_interval_ms is not None
                                        else prof.get("admit_interval_ms", 0.0),
                                        client_latency_ms=client_latency_ms if client_latency_ms is not None
                                        else prof.get("client_latency_ms", 0.0)))
        if config is not None:
            base = json.loads(RunConfig(**fields).model_dump_json())
            file_fields = load_run_config(config)
            if timing is None and (file_fields.get("engine") or {}).get("hardware"):
                base["engine"].pop("timing")   # the file's hardware decides the timing model
            fields = merge(base, file_fields)
        cfg = RunConfig(**fields)
    except ValidationError as exc:
        fail(validation_message(exc))
    except ValueError as exc:
        fail(str(exc))
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
                           max_model_len=max_model_len, match_kv_capacity=match_kv_capacity,
                           startup_timeout_s=startup_timeout, request_timeout_s=request_timeout,
                           vocab_size=vocab_size, tolerance=tolerance, reuse_tolerance=reuse_tolerance,
                           extra_engine_args=tuple(engine_arg), decode_workers=decode_workers,
                           decode_endpoints=list(decode_endpoint))
    try:
        res = validate_api(tr, cfg, opts, say=lambda m: err_console.print(m))
    except ServerError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
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
    console.print(verdict)
    raise typer.Exit(res.exit_code)


def comparison_table(table) -> Table:
    from dynosim.validate.compare import format_error

    t = Table(title="measured vs predicted")
    for col in ("metric", "measured", "predicted", "error", "tolerance", ""):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for _, row in table.iterrows():
        mark = "n/a" if row["predicted"] != row["predicted"] else (
            ("ok" if row["ok"] else "[red]OUT[/red]") if row["gated"] else "(info)")
        tol = f"{row['tolerance']:.3f}" if row["error_kind"] == "abs" else f"{100 * row['tolerance']:.0f}%"
        t.add_row(row["label"], fmt(row["measured"], 3), fmt(row["predicted"], 3), format_error(row), tol, mark)
    return t


@app.command()
def calibrate(
    out: Path = typer.Option(..., "--out", "-o", help="profile to write (YAML), e.g. profiles/cpu_tiny.yaml"),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="a running server to measure"),
    launch: Optional[LaunchEngine] = typer.Option(None, help="start one server to measure (vllm)"),
    model: ModelOpt = "",
    served_model_name: ServedModelNameOpt = None,
    device: DeviceOpt = "cpu",
    engine_python: EnginePythonOpt = None,
    block_size: Optional[int] = typer.Option(None, help="KV block size (launch: passed to the engine; "
                                             "attach: only if the server does not report it)"),
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity in blocks (as --block-size)"),
    max_num_seqs: int = typer.Option(256, help="launch: the engine's cap on running requests"),
    max_num_batched_tokens: int = typer.Option(2048, help="launch: the engine's token budget per pass"),
    max_model_len: MaxModelLenOpt = 2048,
    base_port: BasePortOpt = 18000,
    quick: bool = typer.Option(False, "--quick", help="a small plan (tests, CI, a first look)"),
    prefill_lengths: Optional[str] = typer.Option(None, help="comma list of prompt lengths to time"),
    decode_batches: Optional[str] = typer.Option(None, help="comma list of concurrent streams to time"),
    decode_contexts: Optional[str] = typer.Option(None, help="comma list of decode context lengths"),
    repeats: Optional[int] = typer.Option(None, help="requests per prefill point (median)"),
    vocab_size: VocabSizeOpt = 2048,
    hardware: Optional[str] = typer.Option(None, help="free text recorded in the profile"),
    system: HwSystemOpt = None,
    backend: HwBackendOpt = None,
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    tp: Optional[int] = typer.Option(None, help="with --system: the engine's tensor-parallel GPUs"),
    startup_timeout: StartupTimeoutOpt = 600.0,
    engine_arg: EngineArgOpt = [],
) -> None:
    """Measure a live engine's prefill and decode pass times and write a timing profile.

    The profile works with `run`/`validate`: `--timing interpolated --timing-profile FILE`
    (tables) or `--timing polynomial --timing-profile FILE` (fitted quadratics); its
    engine section (block size, KV blocks) sizes the simulated cache like the real one.
    With --system (the GPU the engine runs on; --model names the model) the profile records
    that hardware and its passes are folded into the measured database: `--timing aic
    --timing-profile FILE` is then the database's prior plus these measurements.
    """
    import asyncio
    import shutil
    import tempfile

    from dynosim.validate.calibrate import CalibrationError, CalibrationPlan, calibrate as calibrate_api, \
        write_profile
    from dynosim.validate.servers import ServerError, default_engine_python, start_server, stop_all, wait_ready
    from dynosim.validate.workflow import ValidateOptions, launch_specs

    if (endpoint is None) == (launch is None):
        fail("give exactly one of --endpoint URL (measure a running server) or --launch vllm")
    if launch is not None and not model:
        fail("--launch needs --model")
    overrides = {k: v for k, v in (("prefill_lengths", int_list(prefill_lengths, "--prefill-lengths")),
                                   ("decode_batches", int_list(decode_batches, "--decode-batches")),
                                   ("decode_contexts", int_list(decode_contexts, "--decode-contexts")),
                                   ("prefill_repeats", repeats)) if v is not None}
    try:
        plan = CalibrationPlan.quick(**overrides) if quick else CalibrationPlan(**overrides)
    except ValidationError as exc:
        fail(validation_message(exc))
    name = served_model_name or model
    hw_spec = None
    if system is not None or any(v is not None for v in (backend, weight_quant, kv_quant, tp)):
        from dynosim.hardware.spec import HardwareSpec

        fields = hardware_section(model or None, system, backend, None, tp, None, None, None, weight_quant, kv_quant)
        try:  # checked before anything is measured
            hw_spec = HardwareSpec(**fields)
            hw_spec.version()
        except ValidationError as exc:
            fail(validation_message(exc))
        except ValueError as exc:
            fail(str(exc))

    async def go():
        servers = []
        workdir = tempfile.mkdtemp(prefix="dynosim-")
        try:
            url = endpoint
            if launch is not None:
                cfg = RunConfig(engine=MockerArgs(block_size=block_size or 32, num_gpu_blocks=num_gpu_blocks or 16384,
                                                  max_num_seqs=max_num_seqs,
                                                  max_num_batched_tokens=max_num_batched_tokens))
                opts = ValidateOptions(out=out.parent, model=model, served_model_name=name, device=device.value,
                                       base_port=base_port, max_model_len=max_model_len,
                                       match_kv_capacity=num_gpu_blocks is not None,
                                       extra_engine_args=tuple(engine_arg))
                spec = launch_specs(cfg, opts, False, workdir)[0]
                log_dir = out.parent / f"{out.stem}_logs"
                servers.append(start_server("calibrate", spec, log_dir, engine=launch.value,
                                            python=engine_python or default_engine_python(launch.value)))
                err_console.print(f"started {launch.value} on {servers[0].url}; waiting (log {servers[0].log_path}) …")
                await wait_ready(servers, name, startup_timeout)
                url = servers[0].url
            err_console.print(f"calibrating {url} (~{plan.n_requests()} requests, ~{plan.estimate_s():.0f} s) …")
            return await calibrate_api(url, name, plan, progress=lambda m: err_console.print(m),
                                       vocab_size=vocab_size, block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                                       hardware=hardware)
        finally:
            stop_all(servers)
            shutil.rmtree(workdir, ignore_errors=True)

    try:
        result = asyncio.run(go())
    except (CalibrationError, ServerError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3)
    except ValueError as exc:
        fail(str(exc))
    path = write_profile(result, out)
    console.print(f"wrote {path}; use it with --timing interpolated --timing-profile {path}")
    if hw_spec is not None:
        from dynosim.hardware.tuning import fold_into_database

        try:
            report, before, after = fold_into_database(path, hw_spec)
        except ValueError as exc:
            fail(f"{path}: {exc}")
        console.print(f"folded into the database ({hw_spec.label()}): {report.summary()}")
        console.print(f"mean error vs these measurements: database {100 * before['all']:.1f}% → tuned "
                      f"{100 * after['all']:.1f}%; use --model {hw_spec.model} --system {hw_spec.system} "
                      f"--timing aic --timing-profile {path}")
