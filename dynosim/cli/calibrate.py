"""`dynosim calibrate`: measure one live engine's pass times and write a timing profile the simulator reads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from dynosim.cli.app import app, console, err_console
from dynosim.cli.common import (P_HW, P_LAUNCH, P_LIVE, P_OUTPUT, P_PLAN, BasePortOpt, DeviceOpt, EngineArgOpt,
                                EnginePythonOpt, HwBackendOpt, HwKvQuantOpt, HwSystemOpt, HwWeightQuantOpt,
                                IdleTimeoutOpt, LaunchEngine, MaxModelLenOpt, ModelOpt, ServedModelNameOpt,
                                StartupTimeoutOpt, VocabSizeOpt, fail, given_flags, hardware_section, idle_seconds,
                                int_list, refuse, validation_message)
from dynosim.config import RunConfig
from dynosim.engines.mocker.config import MockerArgs


@app.command()
def calibrate(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="profile to write (YAML), e.g. profiles/cpu_tiny.yaml",
                             rich_help_panel=P_OUTPUT),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", metavar="<url>", help="a running server to measure",
                                           rich_help_panel=P_LIVE),
    launch: Optional[LaunchEngine] = typer.Option(None, help="start one server to measure (vllm)",
                                                  rich_help_panel=P_LIVE),
    model: ModelOpt = "",
    served_model_name: ServedModelNameOpt = None,
    vocab_size: VocabSizeOpt = 2048,
    block_size: Optional[int] = typer.Option(None, help="KV block size (launch: passed to the engine; "
                                             "attach: only if the server does not report it)",
                                             rich_help_panel=P_LIVE),
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity in blocks (as --block-size)",
                                                 rich_help_panel=P_LIVE),
    device: DeviceOpt = "cpu",
    engine_python: EnginePythonOpt = None,
    max_num_seqs: int = typer.Option(256, help="the engine's cap on running requests", rich_help_panel=P_LAUNCH),
    max_num_batched_tokens: int = typer.Option(2048, help="the engine's token budget per pass",
                                               rich_help_panel=P_LAUNCH),
    max_model_len: MaxModelLenOpt = 2048,
    base_port: BasePortOpt = 18000,
    startup_timeout: StartupTimeoutOpt = 600.0,
    engine_arg: EngineArgOpt = [],
    idle_timeout: float = IdleTimeoutOpt,
    quick: bool = typer.Option(False, "--quick", help="a small plan (tests, CI, a first look)",
                               rich_help_panel=P_PLAN),
    prefill_lengths: Optional[str] = typer.Option(None, help="comma list of prompt lengths to time",
                                                  rich_help_panel=P_PLAN),
    decode_batches: Optional[str] = typer.Option(None, help="comma list of concurrent streams to time",
                                                 rich_help_panel=P_PLAN),
    decode_contexts: Optional[str] = typer.Option(None, help="comma list of decode context lengths",
                                                  rich_help_panel=P_PLAN),
    repeats: Optional[int] = typer.Option(None, help="requests per prefill point (median)", rich_help_panel=P_PLAN),
    hardware: Optional[str] = typer.Option(None, help="free text recorded in the profile", rich_help_panel=P_HW),
    system: HwSystemOpt = None,
    backend: HwBackendOpt = None,
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    tp: Optional[int] = typer.Option(None, help="with --system: the engine's tensor-parallel GPUs",
                                     rich_help_panel=P_HW),
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
    from dynosim.validate.live_deployment import launch_specs
    from dynosim.validate.workflow import ValidateOptions

    given = given_flags(ctx)
    idle_s = idle_seconds(idle_timeout)
    if (endpoint is None) == (launch is None):
        fail("give exactly one of --endpoint URL (measure a running server) or --launch vllm")
    if launch is not None and not model:
        fail("--launch needs --model")
    if endpoint is not None:
        refuse(given, ("device", "engine_python", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
                       "base_port", "startup_timeout", "engine_arg"),
               "when measuring a running server (--endpoint): they set up a launched one (--launch)")
    if system is None:
        refuse(given, ("backend", "weight_quant", "kv_quant", "tp"),
               "without --system: they describe the GPU worker the profile is folded into")
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
                                       hardware=hardware, idle_timeout_s=idle_s)
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
