"""What a sweep covers: a GPU budget and a grid over deployments, routers, engine args and load.

Every combination becomes a ``SweepPoint``: a complete ``RunConfig`` plus the
labels that tell points apart in tables and plots. A point's id is a hash of
its config, so a resumed sweep recognises the points it already ran, and
changing the spec changes exactly the ids of the points it changes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.config import DisaggConfig, RouterParams, RunConfig
from dynosim.disagg.transfer import TransferConfig
from dynosim.engines.mocker.config import MockerArgs, merge_engine
from dynosim.planner.config import SloConfig
from dynosim.sweeps.objectives import Objectives


class SweepSpec(BaseModel):
    """The grid. Defaults give a useful frontier from ``dynosim sweep --trace FILE`` alone."""

    model_config = ConfigDict(extra="forbid")

    gpu_budget: int = Field(16, gt=0, description="GPUs every deployment uses (all of them: workers × TP)")
    modes: list[Literal["agg", "disagg"]] = Field(["agg", "disagg"], min_length=1)
    hardware: dict[str, Any] | None = Field(None, description="the model, system, engine and quantization every "
                                            "point runs (HardwareSpec fields but tp, ep, dp: those are axes); "
                                            "each TP gets its own timing and memory")
    tp: list[int] = Field([1], min_length=1, description="tensor parallel GPUs per worker")
    ep: list[int] = Field([1], min_length=1, description="MoE: expert parallel ranks (with hardware)")
    dp: list[int] = Field([1], min_length=1, description="MoE: attention data-parallel ranks (with hardware)")
    prefill_engine: dict[str, Any] = Field(default_factory=dict, description="disagg: engine fields of the prefill "
                                           "pool that differ, e.g. {hardware: {system: h200_sxm, tp: 2}}")
    decode_engine: dict[str, Any] = Field(default_factory=dict, description="disagg: the same for the decode pool")
    tp_speedup: dict[int, float] = Field(default_factory=dict, description="without hardware only: pass-time "
                                         "divisor per TP (e.g. {2: 1.8}); default 0.9 × TP, an invented figure")
    tp_profiles: dict[int, str] = Field(default_factory=dict, description="without hardware only: timing profile "
                                        "per TP (interpolated)")
    prefill_fractions: list[float] = Field([0.25, 0.5], min_length=1,
                                           description="disagg: share of the workers in the prefill pool")
    router_modes: list[str] = Field(["kv", "round-robin"], min_length=1)
    router_params: dict[str, list[Any]] = Field(default_factory=dict, description="grid over RouterParams fields")
    engine: dict[str, Any] = Field(default_factory=dict, description="MockerArgs fields for every point")
    engine_grid: dict[str, list[Any]] = Field(default_factory=dict, description="grid over MockerArgs fields "
                                              "(max_num_seqs, max_num_batched_tokens, block_size, ...)")
    arrival_speedups: list[float] = Field([1.0, 2.0, 4.0, 8.0], min_length=1,
                                          description="load: the trace's arrivals sped up by each factor")
    concurrency: list[int] = Field(default_factory=list, description="load as closed-loop concurrency (sessions "
                                   "open at once) instead of arrival_speedups, when given")
    transfer: TransferConfig = Field(default_factory=TransferConfig, description="disagg KV hand-off")
    repeats: int = Field(1, ge=1, description="seeds per point (confidence intervals)")
    resample_fraction: float | None = Field(None, gt=0, le=1, description="with repeats: each seed replays its "
                                            "own random subset of this share of the sessions")
    trace_block_size: int = Field(512, gt=0)
    slo: SloConfig = Field(default_factory=SloConfig, description="per-request goodput objectives when no "
                           "objectives are given (objectives set them otherwise)")
    objectives: Objectives = Field(default_factory=Objectives, description="latency limits every point is judged "
                                   "by, and the target load (added to the loads when given and not among them; "
                                   "default ×1, or the lightest load swept when ×1 is not)")

    @model_validator(mode="after")
    def _check(self) -> "SweepSpec":
        if self.objectives.any and "slo" in self.model_fields_set:
            raise ValueError("give objectives (ttft_p90_ms, itl_mean_ms, ...) or slo, not both: the objectives "
                             "set the per-request goodput limits")
        if self.concurrency:
            target = self.objectives.target_load if "target_load" in self.objectives.model_fields_set \
                else float(self.concurrency[0])
            if target != int(target):
                raise ValueError(f"objectives.target_load: {target:g} is not a whole concurrency")
            self.objectives = self.objectives.model_copy(update={"target_load": target,
                                                                 "target_kind": "concurrency"})
            if int(target) not in self.concurrency:
                self.concurrency = sorted({*self.concurrency, int(target)})
        elif "target_load" not in self.objectives.model_fields_set:   # default: ×1, else the lightest load swept
            if 1.0 not in self.arrival_speedups:
                self.objectives = self.objectives.model_copy(update={"target_load": min(self.arrival_speedups)})
        elif self.objectives.target_load not in self.arrival_speedups:
            self.arrival_speedups = sorted({*self.arrival_speedups, self.objectives.target_load})
        for name, vals in (("tp", self.tp), ("ep", self.ep), ("dp", self.dp)):
            if any(v <= 0 for v in vals):
                raise ValueError(f"{name} values must be > 0")
        if self.hardware is None:
            for tp in self.tp:
                if self.gpu_budget % tp:
                    raise ValueError(f"tp={tp}: the GPU budget {self.gpu_budget} is not a multiple of it")
            if self.ep != [1] or self.dp != [1]:
                raise ValueError("ep and dp split a named MoE model: give hardware (--model and --system)")
            if self.prefill_engine.get("hardware") or self.decode_engine.get("hardware"):
                raise ValueError("prefill_engine/decode_engine name hardware: give the sweep's hardware too")
        else:
            for k in ("tp", "ep", "dp"):
                if k in self.hardware:
                    raise ValueError(f"hardware.{k}: {k} is a sweep axis; give it as the list {k}: [...]")
            if self.tp_speedup or self.tp_profiles:
                raise ValueError("tp_speedup and tp_profiles apply without hardware only: with a named model and "
                                 "system every TP is priced from its own timing and memory")
            from dynosim.hardware.spec import HardwareSpec

            HardwareSpec(**{**self.hardware, "tp": 1, "ep": 1, "dp": 1})  # names checked before any point runs
        for k in (*self.prefill_engine, *self.decode_engine):
            if k not in MockerArgs.model_fields:
                raise ValueError(f"prefill_engine/decode_engine: unknown field {k!r}")
        for f in self.prefill_fractions:
            if not 0 < f < 1:
                raise ValueError(f"prefill_fractions: {f} is not strictly between 0 and 1")
        for k in self.router_params:
            if k not in RouterParams.model_fields:
                raise ValueError(f"router_params: unknown field {k!r}")
        for k in (*self.engine, *self.engine_grid):
            if k not in MockerArgs.model_fields:
                raise ValueError(f"engine: unknown field {k!r}")
        if any(s <= 0 for s in self.arrival_speedups):
            raise ValueError("arrival_speedups must be > 0")
        if any(c <= 0 for c in self.concurrency):
            raise ValueError("concurrency values must be > 0")
        return self

    def speedup_of(self, tp: int) -> float:
        return self.tp_speedup.get(tp, 1.0 if tp == 1 else 0.9 * tp)


@dataclass(frozen=True)
class SweepPoint:
    """One deployment at one load with one seed."""

    id: str
    config: RunConfig
    labels: dict[str, Any]     # mode, tp, workers / prefill, decode, router, load, seed, grid values
    resample_fraction: float | None = None


def point_id(cfg: RunConfig, resample_fraction: float | None = None) -> str:
    """A stable id of a config and its trace resampling (same inputs, same id, across runs and machines)."""
    blob = json.dumps({"config": cfg.model_dump(mode="json"), "resample": resample_fraction},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _grid(d: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(d)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(d[k] for k in keys))]


def _gpus(engine: dict[str, Any]) -> int:
    """GPUs of one worker with these engine fields (TP × PP × DP with hardware, else gpus_per_worker)."""
    hw = engine.get("hardware")
    if hw:
        return int(hw.get("tp", 1)) * int(hw.get("pp", 1)) * int(hw.get("dp", 1))
    return int(engine.get("gpus_per_worker", 1))


def _layouts(spec: SweepSpec) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[str]]:
    """(engine fields, parallelism labels) per TP × EP × DP, and why the combinations left out are left out."""
    out, skipped = [], []
    for tp, ep, dp in itertools.product(spec.tp, spec.ep, spec.dp):
        par = {"tp": tp, "ep": ep, "dp": dp}
        if spec.hardware is None:
            engine: dict[str, Any] = {"gpus_per_worker": tp, "speedup_ratio": spec.speedup_of(tp)}
            if tp in spec.tp_profiles:
                engine.update(timing="interpolated", timing_profile=spec.tp_profiles[tp])
            out.append((engine, par))
            continue
        engine = {"hardware": {**spec.hardware, **par}}
        tag = f"TP{tp}" + (f" DP{dp}" if dp > 1 else "") + (f" EP{ep}" if ep > 1 else "")
        try:  # the worker must exist and fit (memory, divisibility) in every pool it serves
            for over in ({}, *([spec.prefill_engine, spec.decode_engine] if "disagg" in spec.modes else [])):
                MockerArgs(**merge_engine({**spec.engine, **engine}, over))
        except ValueError as exc:
            found = re.search(r"Value error, (.*?) \[type=", str(exc), re.S)
            msg = found.group(1) if found else str(exc)
            skipped.append(f"{tag}: {msg}")
            continue
        if spec.gpu_budget % _gpus(engine):
            skipped.append(f"{tag}: the budget of {spec.gpu_budget} GPUs is not a multiple of {_gpus(engine)} GPUs "
                           "per worker")
            continue
        out.append((engine, par))
    return out, skipped


def skipped_layouts(spec: SweepSpec) -> list[str]:
    """Parallelism combinations of the grid that cannot run (do not fit, do not divide), with the reason."""
    return _layouts(spec)[1]


def _deployments(spec: SweepSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(RunConfig fields, labels) per pool layout."""
    out = []
    layouts, _ = _layouts(spec)
    for engine, par in layouts:
        g = _gpus(engine)
        n = spec.gpu_budget // g
        if "agg" in spec.modes:
            out.append(({"workers": n, "engine": engine},
                        {"mode": "agg", **par, "workers": n, "prefill": 0, "decode": 0}))
        if "disagg" not in spec.modes:
            continue
        pre, dec = merge_engine(engine, spec.prefill_engine), merge_engine(engine, spec.decode_engine)
        g_pre, g_dec = _gpus(pre), _gpus(dec)
        if g_pre == g_dec == g:
            splits = sorted({(p, n - p) for p in (min(n - 1, max(1, round(f * n))) for f in spec.prefill_fractions)
                             if n >= 2})
        else:  # pools of different widths: the prefill share of the budget, the rest to decode
            splits = set()
            for f in spec.prefill_fractions:
                p = max(1, round(f * spec.gpu_budget / g_pre))
                d = (spec.gpu_budget - p * g_pre) // g_dec
                if d >= 1:
                    splits.add((p, d))
            splits = sorted(splits)
        for p, d_n in splits:
            d = DisaggConfig(prefill_workers=p, decode_workers=d_n, transfer=spec.transfer,
                             prefill_engine=spec.prefill_engine, decode_engine=spec.decode_engine)
            out.append(({"disagg": d.model_dump(), "engine": engine},
                        {"mode": "disagg", **par, "workers": p + d_n, "prefill": p, "decode": d_n}))
    return out


def expand(spec: SweepSpec) -> list[SweepPoint]:
    """Every combination, in a deterministic order (deployments × routers × engine × load × seed)."""
    points: list[SweepPoint] = []
    seen: set[str] = set()
    # load points: (arrival speed-up, closed-loop concurrency or None)
    loads = [(1.0, c) for c in spec.concurrency] if spec.concurrency else [(s, None) for s in spec.arrival_speedups]
    for (fields, dep_labels), router_mode, rp, eg, (speed, conc), seed in itertools.product(
            _deployments(spec), spec.router_modes, _grid(spec.router_params), _grid(spec.engine_grid),
            loads, range(spec.repeats)):
        engine = {**spec.engine, **eg, **fields["engine"]}
        cfg = RunConfig(**{k: v for k, v in fields.items() if k != "engine"}, engine=MockerArgs(**engine),
                        router_mode=router_mode, router=RouterParams(**rp), arrival_speedup=speed, seed=seed,
                        trace_block_size=spec.trace_block_size, slo=spec.objectives.slo() or spec.slo,
                        concurrency=conc)
        pid = point_id(cfg, spec.resample_fraction)
        if pid in seen:
            continue
        seen.add(pid)
        labels = {**dep_labels, "router": cfg.router_mode, "load": float(conc) if conc else speed,
                  "load_kind": "concurrency" if conc else "rate", "seed": seed, **rp, **eg}
        labels["config"] = _name(labels)
        points.append(SweepPoint(pid, cfg, labels, spec.resample_fraction))
    return points


def _name(lb: dict[str, Any]) -> str:
    """A short human name of a deployment (without load and seed)."""
    par = f"TP{lb['tp']}" + (f"DP{lb['dp']}" if lb.get("dp", 1) > 1 else "") \
        + (f"EP{lb['ep']}" if lb.get("ep", 1) > 1 else "")
    dep = f"{lb['workers']}x{par}" if lb["mode"] == "agg" else f"{lb['prefill']}P{lb['decode']}D-{par}"
    extra = "".join(f" {k}={v}" for k, v in lb.items()
                    if k not in ("mode", "tp", "ep", "dp", "workers", "prefill", "decode", "router", "load",
                                 "load_kind", "seed", "config"))
    return f"{lb['mode']} {dep} {lb['router']}{extra}"
