"""Names the database knows: GPU systems, engines and their versions, models.

Everything here reads aiconfigurator-core's package data (system YAML files,
the version slots, the bundled Hugging Face configs) without loading the
performance database, so resolving a name is cheap enough for validation.
Unknown names raise ``HardwareError`` listing the valid values and the
nearest ones.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

BACKENDS = ("vllm", "sglang", "trtllm")
VERSION_ALIASES = ("current", "previous", "next")


class HardwareError(ValueError):
    """A hardware name or combination that cannot be priced (the CLI prints it as ``error:``)."""


def quiet_aic_logs() -> None:
    """aiconfigurator-core logs provenance notes at WARNING on every load; keep them off the terminal."""
    logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)


def nearest(name: str, options: list[str], n: int = 3) -> str:
    close = difflib.get_close_matches(name, options, n=n, cutoff=0.4)
    if not close:  # substring matches help for long model ids ("Llama-3.1-70B")
        low = name.lower()
        close = [o for o in options if low in o.lower() or o.lower().split("/")[-1] in low][:n]
    return f" (nearest: {', '.join(close)})" if close else ""


@lru_cache(maxsize=1)
def _core_root() -> Path:
    try:
        return Path(str(resources.files("aiconfigurator_core")))
    except ModuleNotFoundError:  # pragma: no cover - a regular dependency
        raise HardwareError("aiconfigurator-core is not installed (pip install aiconfigurator-core)") from None


def systems_dir() -> Path:
    return _core_root() / "systems"


@dataclass(frozen=True)
class SystemSpec:
    """One GPU system as the database describes it (per GPU unless named otherwise)."""

    name: str
    hbm_bytes: int
    mem_bw: float                 # bytes/s
    flops: dict[str, float]       # tensor-core FLOP/s by compute dtype (bfloat16, fp8, fp4, int8)
    gpus_per_node: int
    intra_node_bw: float          # bytes/s per GPU, one direction (NVLink)
    inter_node_bw: float          # bytes/s per GPU, one direction (RDMA NIC)
    other_mem: int                # bytes reserved besides weights and KV (runtime, activations)
    nccl_mem: dict[int, int]      # bytes of communication buffers by TP size

    def nccl_bytes(self, tp: int) -> int:
        if not self.nccl_mem or tp <= 1:
            return 0
        keys = sorted(self.nccl_mem)
        k = next((k for k in keys if k >= tp), keys[-1])
        return self.nccl_mem[k]


def system_names() -> list[str]:
    return sorted(p.stem for p in systems_dir().glob("*.yaml")
                  if p.stem not in ("attention_lane_defaults", "perf_data_reuse_manifest", "query_versions"))


@lru_cache(maxsize=None)
def system_spec(name: str) -> SystemSpec:
    names = system_names()
    if name not in names:
        raise HardwareError(f"unknown system {name!r}; choose from {', '.join(names)}{nearest(name, names)}")
    raw = yaml.safe_load((systems_dir() / f"{name}.yaml").read_text())
    gpu, node, misc = raw.get("gpu", {}), raw.get("node", {}), raw.get("misc", {}) or {}
    flops = {k[: -len("_tc_flops")]: float(v) for k, v in gpu.items() if k.endswith("_tc_flops")}
    return SystemSpec(name=name, hbm_bytes=int(gpu["mem_capacity"]), mem_bw=float(gpu["mem_bw"]), flops=flops,
                      gpus_per_node=int(node.get("num_gpus_per_node", 8)),
                      intra_node_bw=float(node.get("intra_node_bw", 0) or 0),
                      inter_node_bw=float(node.get("inter_node_bw", 0) or 0),
                      other_mem=int(misc.get("other_mem", 0) or 0),
                      nccl_mem={int(k): int(v) for k, v in (misc.get("nccl_mem") or {}).items()})


def _data_versions(system: str, backend: str) -> list[str]:
    """Versions with measured GEMM data for (system, engine): what a pass can be priced from."""
    d = systems_dir() / "data" / system / "gemm" / backend
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


@lru_cache(maxsize=None)
def version_slots(system: str, backend: str) -> dict[str, str]:
    """``{current, previous?, next?}`` → version for (system, engine); empty when the database has no data."""
    raw = yaml.safe_load((systems_dir() / "query_versions.yaml").read_text())
    slots = dict((raw.get("overrides", {}).get(system, {}) or {}).get(backend)
                 or raw.get("defaults", {}).get(backend) or {})
    have = _data_versions(system, backend)
    out = {k: v for k, v in slots.items() if v and v in have}
    cur = out.get("current")
    if cur is not None:
        newer = [v for v in have if _vkey(v) > _vkey(cur)]
        if newer:
            out["next"] = max(newer, key=_vkey)
    return out


def _vkey(v: str) -> tuple:
    import re

    m = re.match(r"(\d+)\.(\d+)\.(\d+)(?:rc(\d+))?", v)
    if not m:
        return (0,)
    a, b, c, rc = m.groups()
    return (int(a), int(b), int(c), 0 if rc is not None else 1, int(rc or 0))


def resolve_backend(system: str, backend: str, version: str | None) -> str:
    """The concrete database version for ``backend`` on ``system`` (``None`` or an alias → its slot)."""
    system_spec(system)
    if backend not in BACKENDS:
        raise HardwareError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}"
                            f"{nearest(backend, list(BACKENDS))}")
    slots = version_slots(system, backend)
    if not slots:
        covered = [b for b in BACKENDS if version_slots(system, b)]
        where = [s for s in system_names() if version_slots(s, backend)]
        raise HardwareError(
            f"the database has no {backend} data for system {system!r}"
            + (f"; {system} has {', '.join(covered)}" if covered else f"; systems with {backend} data: "
               f"{', '.join(where)}") + " (or use --timing roofline for an uncalibrated estimate)")
    if version is None:
        return slots["current"]
    if version in VERSION_ALIASES:
        if version not in slots:
            raise HardwareError(f"{system}/{backend} has no {version!r} version; it has "
                                + ", ".join(f"{k}={v}" for k, v in slots.items()))
        return slots[version]
    if version not in slots.values():
        raise HardwareError(f"{system}/{backend} has no version {version!r}; choose from "
                            + ", ".join(f"{v} ({k})" for k, v in slots.items()))
    return version


# -- models ---------------------------------------------------------------------------------------------------

def _model_configs_dir() -> Path:
    return _core_root() / "model_configs"


def model_names() -> list[str]:
    """Hugging Face ids of the model configs bundled with the database."""
    return sorted(p.name[: -len("_config.json")].replace("--", "/", 1)
                  for p in _model_configs_dir().glob("*_config.json") if not p.name.endswith("_hf_quant_config.json"))


@dataclass(frozen=True)
class ModelSource:
    """Where a model's config came from: a database id, or a local directory holding ``config.json``."""

    name: str                 # what the user typed (id or path)
    aic_path: str             # what aiconfigurator-core is given (id or directory)
    config: dict[str, Any]    # the Hugging Face config
    quant: dict[str, Any] | None  # hf_quant_config.json when present


@lru_cache(maxsize=None)
def resolve_model(name: str) -> ModelSource:
    """A model id from the database, or a path to a ``config.json`` (or the directory holding one)."""
    p = Path(name).expanduser()
    if p.suffix == ".json" or p.is_dir() or len(p.parts) > 2 or name.startswith((".", "/", "~")):
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise HardwareError(f"model config not found: {p}")
        if p.name != "config.json":
            raise HardwareError(f"model config {p}: name the file config.json (with hf_quant_config.json beside "
                                "it if the model is quantized), or give its directory")
        try:
            cfg = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HardwareError(f"model config {p}: not valid JSON ({exc})") from None
        if not isinstance(cfg, dict):
            raise HardwareError(f"model config {p}: expected a JSON object")
        qp = p.parent / "hf_quant_config.json"
        quant = json.loads(qp.read_text()) if qp.is_file() else None
        return ModelSource(name, str(p.parent.resolve()), cfg, quant)
    names = model_names()
    if name not in names:
        raise HardwareError(f"unknown model {name!r}: not in the database's {len(names)} models"
                            f"{nearest(name, names)}; `dynosim hardware list` prints them, or give a path to "
                            "a Hugging Face config.json")
    stem = name.replace("/", "--", 1)
    cfg = json.loads((_model_configs_dir() / f"{stem}_config.json").read_text())
    qp = _model_configs_dir() / f"{stem}_hf_quant_config.json"
    quant = json.loads(qp.read_text()) if qp.is_file() else None
    return ModelSource(name, name, cfg, quant)
