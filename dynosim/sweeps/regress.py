"""Regression checks: fixed traces through fixed configs, compared with a committed baseline.

A CI job runs ``dynosim regress --spec regress.yaml --baseline baseline.json``
after a change to routing (or anything else); it fails (exit 1) when a metric
moved the wrong way by more than its tolerance: latencies up, throughput,
goodput or prefix reuse down. Improvements are reported and pass.
Simulations are deterministic, so the default tolerance is tight.

A figure that cannot be compared never passes: a current figure that is NaN or
missing is a regression, and so is a failed request (a case's figures are only
meaningful when all of its requests complete). The baseline is strict JSON of
numbers: ``--update-baseline`` refuses to record NaN or failed requests for a
compared metric, and a baseline value that is missing, null or not a number is
an error naming the file, the case and the metric.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.config import RunConfig
from dynosim.metrics.catalog import JUDGED, REGRESS_DEFAULT, SWEEP_ROW, direction

# the direction in which each metric is better, and what is compared by default: the metric catalogue's
# (a figure regress compares is a sweep row's column with a direction)
COMPARABLE = frozenset(JUDGED & set(SWEEP_ROW))
DEFAULT_METRICS = list(REGRESS_DEFAULT)


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
        for m in [*self.metrics, *self.tolerances]:
            if m not in COMPARABLE:
                raise ValueError(f"unknown metric {m!r}; choose from {sorted(COMPARABLE)}")
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
    if p.is_dir():
        raise ValueError(f"regress spec {p}: is a directory, not a file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ValueError(f"{p}: not valid YAML ({where}{getattr(exc, 'problem', None) or exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping with 'cases'")
    try:
        return RegressSpec(**data), p.parent
    except Exception as exc:  # noqa: BLE001 - pydantic's message, prefixed with the file
        raise ValueError(f"{p}: {exc}") from None


def run_cases(spec: RegressSpec, root: Path) -> dict[str, dict[str, float]]:
    """Metrics per case name (every metric the sweep rows carry)."""
    from dynosim.sim.simulation import simulate, summarize_state
    from dynosim.metrics.catalog import flat_row
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
        out[case.name] = flat_row(summary)
    return out


@dataclass
class RegressReport:
    table: pd.DataFrame          # case, metric, baseline, current, change, tolerance, status, why (a figure that
                                 # cannot be compared: NaN, missing, failed requests)
    regressions: int
    missing: list[str]           # cases without a baseline

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions or self.missing else 0


def _number(v: Any) -> float | None:
    """A finite figure, or None (NaN, missing, not a number)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def compare(spec: RegressSpec, baseline: dict[str, dict[str, float]],
            current: dict[str, dict[str, float]]) -> RegressReport:
    """Each case's metrics against the baseline. NaN or missing current figures and failed requests regress
    whatever the tolerance: they are what a broken case looks like, and NaN compares as neither worse nor
    better."""
    rows, missing = [], []
    for case in spec.cases:
        base = baseline.get(case.name)
        if base is None:
            missing.append(case.name)
            continue
        cur = current.get(case.name, {})
        metrics = list(spec.metrics) + ([] if "failed" in spec.metrics else ["failed"])
        for m in metrics:
            b, c = _number(base.get(m)), _number(cur.get(m))
            if m == "failed" and m not in spec.metrics:
                b = b or 0.0                              # checked always; a baseline need not list it
            tol = spec.tolerances.get(m, spec.tolerance)
            if m == "failed" and m not in spec.metrics and not c:
                continue                                  # not asked for, and nothing failed: no row
            status, why = None, ""
            if c is None:
                status, why = "REGRESSED", "no figure" if m not in cur else f"not a number ({cur.get(m)!r})"
            elif m == "failed" and c > 0:
                status, why = "REGRESSED", f"{c:g} request(s) failed"
            if b is None:                # read_baseline rejects these; a baseline built in code may hold them
                raise ValueError(f"baseline case {case.name!r}: metric {m!r} is not a finite number "
                                 f"({base.get(m)!r})")
            change = float("nan") if c is None else (c - b) / abs(b) if b else \
                (0.0 if c == b else math.copysign(math.inf, c - b))
            if status is None:
                higher = direction(m) == "higher"
                worse = change < -tol if higher else change > tol
                better = change > tol if higher else change < -tol
                status = "REGRESSED" if worse else ("improved" if better else "ok")
            rows.append({"case": case.name, "metric": m, "baseline": b, "current": float("nan") if c is None else c,
                         "change": change, "tolerance": tol, "status": status, "why": why})
    table = pd.DataFrame(rows, columns=["case", "metric", "baseline", "current", "change", "tolerance", "status",
                                        "why"])
    return RegressReport(table, int((table["status"] == "REGRESSED").sum()), missing)


def read_baseline(path: str | Path, spec: RegressSpec | None = None) -> dict[str, dict[str, float]]:
    """The baseline's cases; with ``spec``, every metric it compares must be a number in every case present."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"baseline not found: {p} (create it with --update-baseline)")
    if p.is_dir():
        raise ValueError(f"baseline {p}: is a directory, not a file")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise ValueError(f"{p}: expected {{'cases': {{name: {{metric: value}}}}}}")
    cases = data["cases"]
    for case in (spec.cases if spec is not None else []):
        base = cases.get(case.name)
        if base is None:
            continue                                       # reported as a case without a baseline
        if not isinstance(base, dict):
            raise ValueError(f"{p}: case {case.name!r}: expected {{metric: value}}, got {base!r}")
        for m in spec.metrics:
            v = base.get(m)
            if m not in base:
                why = "is missing"
            elif v is None:
                why = "is null"
            elif _number(v) is None:
                why = f"is not a finite number ({v!r})"
            else:
                continue
            raise ValueError(f"{p}: case {case.name!r}: metric {m!r} {why}; fix it or re-create the baseline "
                             "with --update-baseline")
    return cases


def check_baseline_target(path: str | Path) -> Path:
    """Where ``--update-baseline`` will write, checked before any case runs (a result is never computed only to
    be lost)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--baseline {p}: is a directory, not a file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--baseline {p}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"--baseline {p}: not writable")
    return p


def baseline_json(current: dict[str, dict[str, float]], spec: RegressSpec | None = None) -> str:
    """The baseline file's text: strict JSON (NaN becomes null, and a compared metric may not be NaN)."""
    from dynosim import __version__

    compared = set(spec.metrics) if spec is not None else set()
    cases: dict[str, dict[str, Any]] = {}
    for name, figures in current.items():
        failed = _number(figures.get("failed"))
        if spec is not None and failed:
            raise ValueError(f"case {name!r}: {failed:g} request(s) failed; a baseline records cases whose "
                             "requests all complete (the figures of the others are not comparable)")
        out: dict[str, Any] = {}
        for m, v in figures.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                if m in compared:
                    raise ValueError(f"case {name!r}: metric {m!r} is {v}; a baseline cannot record it (a case "
                                     "whose requests all fail has no latency or throughput)")
                v = None
            out[m] = v
        cases[name] = out
    return json.dumps({"dynosim_version": __version__, "cases": cases}, indent=2, sort_keys=True,
                      allow_nan=False) + "\n"


def write_baseline(path: str | Path, current: dict[str, dict[str, float]], spec: RegressSpec | None = None) -> Path:
    p = Path(path)
    text = baseline_json(current, spec)          # raises before the file is touched
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)
    return p
