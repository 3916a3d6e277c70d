"""What the commands share: error exits, parsing helpers, number formatting and the choice enums."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

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


def fail(msg: str) -> None:
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
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def fmt(x: float, nd: int = 2) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:,.{nd}f}"


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_run_config(path: Path) -> dict:
    import yaml

    if not path.exists():
        fail(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        fail(f"{path}: not valid YAML/JSON: {exc}")
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping of RunConfig fields")
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


# Options more than one command takes: one declaration of each flag and its help; defaults stay per command.
TraceOpt = Annotated[Path, typer.Option("--trace", "-t", help="Mooncake-style JSONL trace")]
TraceBlockSizeOpt = Annotated[int, typer.Option(help="tokens per trace hash_id")]
ArrivalSpeedupOpt = Annotated[float, typer.Option(help="divide arrival times and session delays by this")]
LimitOpt = Annotated[Optional[int], typer.Option(help="replay only the first N trace rows")]
SeedOpt = Annotated[int, typer.Option(help="random seed (random router, tie-breaks)")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", help="aggregated engine workers")]
RouterModeOpt = Annotated[RouterMode, typer.Option("--router-mode", help="routing policy")]
MaxNumSeqsOpt = Annotated[int, typer.Option(help="cap on running requests per worker")]
MaxBatchedTokensOpt = Annotated[int, typer.Option(help="token budget of one scheduler pass")]
TimingOpt = Annotated[TimingName, typer.Option(help="timing model")]
TimingProfileOpt = Annotated[Optional[str], typer.Option(help="profile from `dynosim calibrate`, or a bundled name")]
# live engines (validate, calibrate)
ModelOpt = Annotated[str, typer.Option(help="model directory or name to launch")]
ServedModelNameOpt = Annotated[Optional[str], typer.Option(help="model name the servers serve (default: --model)")]
DeviceOpt = Annotated[Device, typer.Option(help="cpu (the CPU build of vLLM) or cuda")]
EnginePythonOpt = Annotated[Optional[str], typer.Option(help="Python with the engine installed "
                                                        "(default: .venv-vllm/bin/python when present)")]
MaxModelLenOpt = Annotated[int, typer.Option(help="launch: the engine's context limit")]
BasePortOpt = Annotated[int, typer.Option(help="launch: first HTTP port")]
StartupTimeoutOpt = Annotated[float, typer.Option(help="launch: seconds to wait for the servers")]
VocabSizeOpt = Annotated[int, typer.Option(help="prompt token ids are drawn in [4, vocab size)")]
EngineArgOpt = Annotated[list[str], typer.Option("--engine-arg", help="launch: extra server argument (repeatable)")]
# hardware: model × GPU system × engine × parallelism (run, sweep, validate)
HwModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="model to price: a database id (dynosim hardware list) or a path to a config.json")]
HwSystemOpt = Annotated[Optional[str], typer.Option("--system", help="GPU system: h100_sxm, h200_sxm, b200_sxm, …")]
HwBackendOpt = Annotated[Optional[str], typer.Option("--backend", help="engine: vllm | sglang | trtllm")]
HwVersionOpt = Annotated[Optional[str], typer.Option("--backend-version",
                                                     help="engine version (default: the database's current)")]
HwWeightQuantOpt = Annotated[Optional[str], typer.Option("--weight-quant",
                                                         help="weights: bf16, fp8, nvfp4, int8, int4")]
HwKvQuantOpt = Annotated[Optional[str], typer.Option("--kv-quant", help="KV cache: bf16, fp8, int8")]
HwMemUtilOpt = Annotated[Optional[float], typer.Option("--gpu-memory-utilization",
                                                       help="share of GPU memory the engine takes (0.9)")]
NextnOpt = Annotated[int, typer.Option("--nextn", help="speculative decoding: draft tokens per decode pass (0-5)")]
AcceptRatesOpt = Annotated[Optional[str], typer.Option(
    "--nextn-accept-rates", help="acceptance per draft position, e.g. 0.85,0.3")]


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
