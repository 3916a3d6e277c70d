"""Regression checks: fixed traces through fixed configs, compared with a committed baseline.

A CI job runs ``dynosim regress --spec regress.yaml --baseline baseline.json``
after a change to routing (or anything else); it fails (exit 1) when a metric
moved the wrong way by more than its tolerance: latencies up, throughput,
goodput or prefix reuse down. Improvements are reported and pass.
Simulations are deterministic, so the default tolerance is tight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.config import RunConfig

# the direction in which each metric is better
HIGHER_IS_BETTER = {"output_tps_per_gpu", "output_tps", "requests_per_s", "tps_user_mean", "tps_user_p50",
                    "goodput_rps", "slo_attainment", "prefix_reuse", "completed"}
LOWER_IS_BETTER = {"ttft_p50", "ttft_p90", "ttft_p99", "ttft_mean", "itl_mean", "itl_p50", "itl_p90", "e2e_p50",
                   "e2e_p90", "preemptions", "failed"}
DEFAULT_METRICS = ["ttft_p50", "ttft_p90", "itl_mean", "e2e_p90", "output_tps_per_gpu", "goodput_rps",
                   "prefix_reuse", "failed"]


class RegressCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    trace: str = Field(description="path, relative to the spec file")
    limit: int | None = Field(None, gt=0)
    config: dict[str, Any] = Field(default_factory=dict, description="RunConfig fields")


class RegressSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(0.01, ge=0, description="relative change allowed in the worse direction")
    tolerances: dict[str, float] = Field(default_factory=dict, description="per-metric tolerance")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS), min_length=1)
    cases: list[RegressCase] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "RegressSpec":
        known = HIGHER_IS_BETTER | LOWER_IS_BETTER
        for m in [*self.metrics, *self.tolerances]:
            if m not in known:
                raise ValueError(f"unknown metric {m!r}; choose from {sorted(known)}")
        names = [c.name for c in self.cases]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"case names must be unique: {sorted(dup)}")
        for c in self.cases:
            try:
                RunConfig(**c.config)
            except Exception as exc:  # noqa: BLE001 - re-raised with the case's name
                raise ValueError(f"case {c.name!r}: invalid config: {exc}") from None
        return self


def load_spec(path: str | Path) -> tuple[RegressSpec, Path]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"regress spec not found: {p}")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping with 'cases'")
    try:
        return RegressSpec(**data), p.parent
    except Exception as exc:  # noqa: BLE001 - pydantic's message, prefixed with the file
        raise ValueError(f"{p}: {exc}") from None


def run_cases(spec: RegressSpec, root: Path) -> dict[str, dict[str, float]]:
    """Metrics per case name (every metric the sweep rows carry)."""
    from dynosim.sim.simulation import simulate, summarize_state
    from dynosim.sweeps.runner import metrics_row
    from dynosim.traces.mooncake import load_trace

    out = {}
    for case in spec.cases:
        cfg = RunConfig(**case.config)
        trace_path = (root / case.trace) if not Path(case.trace).is_absolute() else Path(case.trace)
        if not trace_path.exists():
            raise FileNotFoundError(f"case {case.name!r}: trace not found: {trace_path}")
        tr = load_trace(trace_path, trace_block_size=cfg.trace_block_size, speedup=cfg.arrival_speedup,
                        limit=case.limit)
        _, summary = summarize_state(simulate(tr, cfg))
        out[case.name] = metrics_row(summary)
    return out


@dataclass
class RegressReport:
    table: pd.DataFrame          # case, metric, baseline, current, change, tolerance, status
    regressions: int
    missing: list[str]           # cases without a baseline

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions or self.missing else 0


def compare(spec: RegressSpec, baseline: dict[str, dict[str, float]],
            current: dict[str, dict[str, float]]) -> RegressReport:
    rows, missing = [], []
    for case in spec.cases:
        base = baseline.get(case.name)
        if base is None:
            missing.append(case.name)
            continue
        for m in spec.metrics:
            b, c = float(base[m]), float(current[case.name][m])
            tol = spec.tolerances.get(m, spec.tolerance)
            change = (c - b) / abs(b) if b else (0.0 if c == b else float("inf") * (1 if c > b else -1))
            worse = change < -tol if m in HIGHER_IS_BETTER else change > tol
            better = change > tol if m in HIGHER_IS_BETTER else change < -tol
            rows.append({"case": case.name, "metric": m, "baseline": b, "current": c, "change": change,
                         "tolerance": tol, "status": "REGRESSED" if worse else ("improved" if better else "ok")})
    table = pd.DataFrame(rows, columns=["case", "metric", "baseline", "current", "change", "tolerance", "status"])
    return RegressReport(table, int((table["status"] == "REGRESSED").sum()), missing)


def read_baseline(path: str | Path) -> dict[str, dict[str, float]]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"baseline not found: {p} (create it with --update-baseline)")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise ValueError(f"{p}: expected {{'cases': {{name: {{metric: value}}}}}}")
    return data["cases"]


def write_baseline(path: str | Path, current: dict[str, dict[str, float]]) -> Path:
    from dynosim import __version__

    p = Path(path)
    p.write_text(json.dumps({"dynosim_version": __version__, "cases": current}, indent=2, sort_keys=True) + "\n")
    return p
