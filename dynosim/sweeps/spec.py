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
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.config import DisaggConfig, RouterParams, RunConfig
from dynosim.disagg.transfer import TransferConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.planner.config import SloConfig


class SweepSpec(BaseModel):
    """The grid. Defaults give a useful frontier from ``dynosim sweep --trace FILE`` alone."""

    model_config = ConfigDict(extra="forbid")

    gpu_budget: int = Field(16, gt=0, description="GPUs every deployment uses (all of them: workers × TP)")
    modes: list[Literal["agg", "disagg"]] = Field(["agg", "disagg"], min_length=1)
    tp: list[int] = Field([1], min_length=1, description="GPUs per worker; a TP's speed comes from tp_speedup "
                                                          "or tp_profiles")
    tp_speedup: dict[int, float] = Field(default_factory=dict, description="pass-time divisor per TP "
                                         "(e.g. {2: 1.8}); default: 1 for TP1, else 0.9 × TP")
    tp_profiles: dict[int, str] = Field(default_factory=dict, description="timing profile per TP (interpolated)")
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
    slo: SloConfig = Field(default_factory=SloConfig)

    @model_validator(mode="after")
    def _check(self) -> "SweepSpec":
        for tp in self.tp:
            if tp <= 0 or self.gpu_budget % tp:
                raise ValueError(f"tp={tp}: the GPU budget {self.gpu_budget} is not a positive multiple of it")
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


def _deployments(spec: SweepSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(RunConfig fields, labels) per pool layout."""
    out = []
    for tp in spec.tp:
        n = spec.gpu_budget // tp
        speed = spec.speedup_of(tp)
        engine = {"gpus_per_worker": tp, "speedup_ratio": speed}
        if tp in spec.tp_profiles:
            engine.update(timing="interpolated", timing_profile=spec.tp_profiles[tp])
        if "agg" in spec.modes:
            out.append(({"workers": n, "engine": engine},
                        {"mode": "agg", "tp": tp, "workers": n, "prefill": 0, "decode": 0}))
        if "disagg" in spec.modes and n >= 2:
            splits = sorted({min(n - 1, max(1, round(f * n))) for f in spec.prefill_fractions})
            for p in splits:
                d = DisaggConfig(prefill_workers=p, decode_workers=n - p, transfer=spec.transfer)
                out.append(({"disagg": d.model_dump(), "engine": engine},
                            {"mode": "disagg", "tp": tp, "workers": n, "prefill": p, "decode": n - p}))
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
                        trace_block_size=spec.trace_block_size, slo=spec.slo, concurrency=conc)
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
    dep = f"{lb['workers']}xTP{lb['tp']}" if lb["mode"] == "agg" else f"{lb['prefill']}P{lb['decode']}D-TP{lb['tp']}"
    extra = "".join(f" {k}={v}" for k, v in lb.items()
                    if k not in ("mode", "tp", "workers", "prefill", "decode", "router", "load", "load_kind", "seed",
                                 "config"))
    return f"{lb['mode']} {dep} {lb['router']}{extra}"
