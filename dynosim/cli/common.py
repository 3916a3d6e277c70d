"""What the commands share: error exits, parsing helpers, number formatting and the choice enums."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from pydantic import ValidationError

from dynosim.cli.app import err_console
from dynosim.engines.mocker.timing import TIMING_MODELS
from dynosim.router.policies import POLICIES

RouterMode = Enum("RouterMode", {k.replace("-", "_"): k for k in POLICIES}, type=str)  # type: ignore[misc]
TimingName = Enum("TimingName", {k: k for k in TIMING_MODELS}, type=str)  # type: ignore[misc]


class Preemption(str, Enum):
    lifo = "lifo"
    fifo = "fifo"


class LaunchEngine(str, Enum):
    vllm = "vllm"
    sglang = "sglang"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


def fail(msg: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        parts.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return "invalid configuration: " + "; ".join(parts)


def parse_options(items: list[str]) -> dict:
    """KEY=VALUE strings to a dict, values parsed as JSON when they parse (numbers, booleans)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--router-option")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError as exc:
            if v.lstrip()[:1] in ("{", "["):  # meant as a JSON object or list: say so rather than pass a string
                fail(f"--router-option {k.strip()}: not valid JSON ({exc.msg} at character {exc.pos + 1}): {v}")
            out[k.strip()] = v
    return out


def fmt(x: float, nd: int = 2) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:,.{nd}f}"


def row_decimals(values, nd: int = 2) -> int:
    """Decimals for a row of numbers: fewer as they grow (1,234 ms, 123.4 ms, 12.34 ms), so a table of them
    fits an 80-column terminal without cutting a number."""
    finite = [abs(v) for v in values if v == v and abs(v) != float("inf")]
    m = max(finite, default=0.0)
    return 0 if m >= 1000 else min(nd, 1) if m >= 100 else nd


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_run_config(path: Path, flag: str = "--config") -> dict:
    """The mapping in a YAML/JSON file of RunConfig fields; every problem is an ``error:`` line naming ``flag``."""
    import yaml

    if not path.exists():
        fail(f"{flag}: config not found: {path}")
    if not path.is_file():
        fail(f"{flag} {path}: not a file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        from dynosim.engines.mocker.timing import yaml_problem

        fail(f"{flag} {path}: not valid YAML/JSON: {yaml_problem(exc)}")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{flag} {path}: cannot read it: {exc}")
    if not isinstance(data, dict):
        fail(f"{flag} {path}: expected a mapping of RunConfig fields")
    return data


def int_list(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        fail(f"{name}: expected comma-separated integers, got {text!r}")


def float_list(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{name}: expected comma-separated numbers, got {text!r}")


# Help panels: `--help` groups a command's options by the part of the deployment they set, so an
# 80-column terminal shows short panels of related flags instead of one box of sixty.
P_LOAD = "Trace and load"
P_DEPLOY = "Deployment"
P_HW = "Hardware (a named model on a GPU system)"
P_ENGINE = "Engine"
P_TIMING = "Timing model"
P_ROUTER = "Router"
P_DISAGG = "Disaggregation"
P_PLANNER = "Planner"
P_SLO = "Objectives"
P_OUTPUT = "Output"
P_LIVE = "Live engines"
P_LAUNCH = "Launch (--launch only)"
P_ATTACH = "Attach (--endpoint only)"
P_COMPARE = "Comparison"
P_PLAN = "Measurement plan"

# Options more than one command takes: one declaration of each flag and its help; defaults stay per command.
TraceOpt = Annotated[Path, typer.Option("--trace", "-t", help="Mooncake-style JSONL trace", rich_help_panel=P_LOAD)]
TraceBlockSizeOpt = Annotated[int, typer.Option(help="tokens per trace hash_id", rich_help_panel=P_LOAD)]
ArrivalSpeedupOpt = Annotated[float, typer.Option(help="divide arrival times and session delays by this",
                                                  rich_help_panel=P_LOAD)]
LimitOpt = Annotated[Optional[int], typer.Option(help="replay only the first N trace rows", rich_help_panel=P_LOAD)]
# metavar: typer would show "<int range> [x>=0]", too wide for the Router panel's names in 80 columns
SeedOpt = Annotated[int, typer.Option(min=0, metavar="<int>", help="random seed (random router, tie-breaks)",
                                      rich_help_panel=P_ROUTER)]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", help="aggregated engine workers",
                                         rich_help_panel=P_DEPLOY)]
RouterModeOpt = Annotated[RouterMode, typer.Option("--router-mode", metavar="<name>", rich_help_panel=P_ROUTER,
                                                   help="routing policy: " + ", ".join(POLICIES))]
MaxNumSeqsOpt = Annotated[int, typer.Option(help="cap on running requests per worker", rich_help_panel=P_ENGINE)]
MaxBatchedTokensOpt = Annotated[int, typer.Option(help="token budget of one scheduler pass",
                                                  rich_help_panel=P_ENGINE)]
TIMING_HELP = "timing model: " + ", ".join(TIMING_MODELS)
TimingProfileOpt = Annotated[Optional[str], typer.Option(
    help="profile from `dynosim calibrate` (a file), or a bundled name", rich_help_panel=P_TIMING)]
# live engines (validate, calibrate)
ModelOpt = Annotated[str, typer.Option(help="model directory or name to launch", rich_help_panel=P_LIVE)]
ServedModelNameOpt = Annotated[Optional[str], typer.Option(help="model name the servers serve (default: --model)",
                                                           rich_help_panel=P_LIVE)]
DeviceOpt = Annotated[Device, typer.Option(help="cpu (the CPU build of vLLM) or cuda", rich_help_panel=P_LAUNCH)]
EnginePythonOpt = Annotated[Optional[str], typer.Option(help="Python with the engine installed "
                                                        "(default: the venv of scripts/setup_vllm_cpu.sh, "
                                                        "~/.cache/dynosim/venv-vllm, when present)",
                                                        rich_help_panel=P_LAUNCH)]
MaxModelLenOpt = Annotated[int, typer.Option(help="the engine's context limit", rich_help_panel=P_LAUNCH)]
BasePortOpt = Annotated[int, typer.Option(help="first HTTP port", rich_help_panel=P_LAUNCH)]
StartupTimeoutOpt = Annotated[float, typer.Option(help="seconds to wait for the servers", rich_help_panel=P_LAUNCH)]
VocabSizeOpt = Annotated[int, typer.Option(help="prompt token ids are drawn in [4, vocab size)",
                                           rich_help_panel=P_LIVE)]
EngineArgOpt = Annotated[list[str], typer.Option("--engine-arg", metavar="<arg>", rich_help_panel=P_LAUNCH,
                                                 help="extra server argument (repeatable)")]
# hardware: model × GPU system × engine × parallelism (run, sweep, validate)
HwModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="model to price: a database id (dynosim hardware list) or a path to a config.json",
    rich_help_panel=P_HW)]
HwSystemOpt = Annotated[Optional[str], typer.Option("--system", help="GPU system: h100_sxm, h200_sxm, b200_sxm, …",
                                                    rich_help_panel=P_HW)]
HwBackendOpt = Annotated[Optional[str], typer.Option("--backend", help="engine: vllm | sglang | trtllm",
                                                     rich_help_panel=P_HW)]
HwVersionOpt = Annotated[Optional[str], typer.Option("--backend-version", rich_help_panel=P_HW,
                                                     help="engine version (default: the database's current)")]
HwWeightQuantOpt = Annotated[Optional[str], typer.Option("--weight-quant", rich_help_panel=P_HW,
                                                         help="weights: bf16, fp8, nvfp4, int8, int4")]
HwKvQuantOpt = Annotated[Optional[str], typer.Option("--kv-quant", help="KV cache: bf16, fp8, int8",
                                                     rich_help_panel=P_HW)]
HwMemUtilOpt = Annotated[Optional[float], typer.Option("--gpu-memory-utilization", rich_help_panel=P_HW,
                                                       help="share of GPU memory the engine takes (0.9)")]
NextnOpt = Annotated[int, typer.Option("--nextn", help="speculative decoding: draft tokens per decode pass (0-5)",
                                       rich_help_panel=P_ENGINE)]
AcceptRatesOpt = Annotated[Optional[str], typer.Option(
    "--nextn-accept-rates", help="acceptance per draft position, e.g. 0.85,0.3", rich_help_panel=P_ENGINE)]


def given_flags(ctx: typer.Context) -> dict[str, str]:
    """The options the user typed (not left at their defaults): parameter name -> flag as shown in `--help`.

    A flag is checked against the mode only when it was given, so a default never raises an error.
    """
    out = {}
    for p in ctx.command.params:
        src = ctx.get_parameter_source(p.name)
        if src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT") and p.param_type_name == "option":
            out[p.name] = max(p.opts, key=len)
    return out


def refuse(given: dict[str, str], names, why: str) -> None:
    """Fail when any of the parameters ``names`` was given: in this mode it would do nothing (``why``)."""
    flags = [given[n] for n in names if n in given]
    if flags:
        fail(f"{', '.join(flags)} {'has' if len(flags) == 1 else 'have'} no effect {why}")


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/] {msg}")


def _set_in(fields: dict, path: str) -> bool:
    """Whether the nested mapping ``fields`` has a value at the dotted ``path``."""
    for key in path.split("."):
        if not isinstance(fields, dict) or key not in fields:
            return False
        fields = fields[key]
    return True


# which RunConfig field each deployment flag of `run` and `validate` sets (parameter name -> dotted field):
# a flag the --config file also sets is overridden by the file, and that is said, never silent
CONFIG_FIELD_OF = {
    "workers": "workers", "router_mode": "router_mode", "num_gpu_blocks": "engine.num_gpu_blocks",
    "block_size": "engine.block_size", "max_num_seqs": "engine.max_num_seqs",
    "max_num_batched_tokens": "engine.max_num_batched_tokens", "timing": "engine.timing",
    "timing_profile": "engine.timing_profile", "speedup_ratio": "engine.speedup_ratio",
    "no_prefix_caching": "engine.enable_prefix_caching", "no_chunked_prefill": "engine.enable_chunked_prefill",
    "preemption_mode": "engine.preemption_mode", "gpus_per_worker": "engine.gpus_per_worker",
    "nextn": "engine.nextn", "nextn_accept_rates": "engine.nextn_accept_rates",
    "admit_interval_ms": "engine.admit_interval_ms", "client_latency_ms": "engine.client_latency_ms",
    "trace_block_size": "trace_block_size", "arrival_speedup": "arrival_speedup", "concurrency": "concurrency",
    "router_temperature": "router.temperature", "kv_overlap_score_credit": "router.overlap_score_credit",
    "router_prefill_load_scale": "router.prefill_load_scale", "no_router_kv_events": "router.kv_events",
    "router_ttl": "router.ttl_s", "router_tie_break": "router.tie_break",
    "router_queue_threshold": "router.queue_threshold", "router_queue_policy": "router.queue_policy",
    "device_types": "router.device_types", "seed": "seed", "slo_ttft_ms": "slo.ttft_ms", "slo_itl_ms": "slo.itl_ms",
    "prefill_workers": "disagg.prefill_workers", "decode_workers": "disagg.decode_workers",
    "kv_transfer_link": "disagg.transfer.link", "kv_transfer_bandwidth": "disagg.transfer.bandwidth_gbps",
    "kv_transfer_latency_ms": "disagg.transfer.latency_ms", "kv_transfer_contention": "disagg.transfer.contention",
    "planner_target": "planner.optimization_target", "planner_predictor": "planner.predictor",
    "planner_gpu_budget": "planner.max_gpu_budget", "planner_startup_s": "planner.startup_time_s",
    "planner_max_replicas": "planner.max_replicas",
    **{k: f"engine.hardware.{k}" for k in ("model", "system", "backend", "backend_version", "tp", "pp", "ep", "dp",
                                           "weight_quant", "kv_quant", "gpu_memory_utilization")},
}


def warn_overridden(given: dict[str, str], file_fields: dict, config: Path) -> None:
    """Say which given flags the --config file overrides."""
    field_of = CONFIG_FIELD_OF
    over = [f"{flag} ({field_of[n]})" for n, flag in given.items() if n in field_of and _set_in(file_fields, field_of[n])]
    if over:
        warn(f"{config} also sets {', '.join(over)}: the file's values win")


def hardware_section(model: str | None, system: str | None, backend: str | None = None,
                     backend_version: str | None = None, tp: int | None = None, pp: int | None = None,
                     ep: int | None = None, dp: int | None = None, weight_quant: str | None = None,
                     kv_quant: str | None = None, gpu_memory_utilization: float | None = None) -> dict | None:
    """The engine's ``hardware`` fields from the flags (None when no model and system are named).

    A hardware flag without ``--model`` and ``--system`` is an error, never ignored.
    """
    extra = {"--backend": backend, "--backend-version": backend_version, "--pp": pp, "--ep": ep, "--dp": dp,
             "--weight-quant": weight_quant, "--kv-quant": kv_quant,
             "--gpu-memory-utilization": gpu_memory_utilization}
    if model is None and system is None:
        given = [k for k, v in extra.items() if v is not None]
        if given:
            fail(f"{', '.join(given)} describe a worker's hardware: name --model and --system too")
        return None
    if model is None or system is None:
        fail("name both --model and --system (a model is priced on a GPU system)")
    fields = {"model": model, "system": system, "backend": backend, "backend_version": backend_version, "tp": tp,
              "pp": pp, "ep": ep, "dp": dp, "weight_quant": weight_quant, "kv_quant": kv_quant,
              "gpu_memory_utilization": gpu_memory_utilization}
    return {k: v for k, v in fields.items() if v is not None}


def accept_rates(text: str | None) -> list[float] | None:
    rates = float_list(text, "--nextn-accept-rates")
    return rates if rates is not None else None


IdleTimeoutOpt = typer.Option(60.0, "--idle-timeout", metavar="S", rich_help_panel=P_LIVE,
                              help="a stream silent this long (between chunks, or before its first) fails "
                                   "as timed out; 0: no limit")


def idle_seconds(value: float) -> float | None:
    if not value >= 0 or value == float("inf"):
        fail(f"--idle-timeout must be a number of seconds >= 0 (0: no limit), got {value}")
    return value or None
