"""Calibration meets the database: a measured profile folded into ``--timing aic``.

A timing profile (``dynosim calibrate``, or a published one) holds measured
passes: lone prompts (``prefill: {new_tokens, ms}``) and decode steps on a grid
(``decode: {active_kv_tokens, context_length, itl_ms}``, batch =
active_kv_tokens / context_length). Here they become observed forward-pass
iterations for aiconfigurator-core's ``RustForwardPassPerfModel.tune_with_fpms``,
which learns bounded per-bucket corrections over the database's prices. The
result is the database's prior where nothing was measured and the
measurements where something was:

    timing, report = tune_aic_timing(hw, "h200_llama3.1-8b-fp8_vllm")

Tuning mutates the model, so every call builds a fresh strict model; the
process-wide ``aic_timing()`` cache is never touched.

Units: the profile's tables are in milliseconds; an FPM's ``wall_time`` is in
seconds (what ``tune_with_fpms`` reads: a target of ``x`` ms is ``x / 1000``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynosim.hardware.aic import AicTiming, aic_config, fpm
from dynosim.hardware.catalog import HardwareError, quiet_aic_logs
from dynosim.hardware.spec import HardwareSpec

# the database model's own defaults for its correction grid (see RustForwardPassPerfModel's docstring)
DEFAULT_MAX_NUM_TOKENS = 8192
DEFAULT_MAX_BATCH_SIZE = 512
DEFAULT_MAX_KV_TOKENS = 2_000_000
MIN_FASTER = 0.5  # learned speed-ups at most 2x
MAX_SLOWER = 2.0  # learned slow-downs at most 2x


# ---------------------------------------------------------------------------------------------------------------
# the profile


def _load(profile: str | Path | dict) -> tuple[dict, str]:
    """The profile's mapping and a name for it (the file's stem; ``name``/``model`` of a bare mapping)."""
    if isinstance(profile, dict):
        return profile, str(profile.get("name") or profile.get("model") or "profile")
    from dynosim.engines.mocker.timing import load_profile_dict, resolve_profile

    return load_profile_dict(profile), resolve_profile(profile).stem


def _num(x: Any) -> float:
    """A table entry as a float; NaN for anything that is not a finite number (None, text, inf)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    x = float(x)
    return x if math.isfinite(x) else math.nan


@dataclass(frozen=True)
class MeasuredPass:
    """One measured pass of a profile: its shape (as ``fpm`` takes it) and its time."""

    kind: str  # "prefill" or "decode"
    n_prefill: int
    prefill_tokens: int
    n_decode: int
    decode_kv: int
    ms: float

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.n_prefill, self.prefill_tokens, self.n_decode, self.decode_kv


def measured_passes(profile: str | Path | dict) -> list[MeasuredPass]:
    """The usable entries of a profile's tables, prefill rows first, then the decode grid row by row.

    A prefill row is a lone prompt (1 request, ``new_tokens`` new tokens); a
    decode cell is a decode-only pass of ``round(kv / ctx)`` requests holding
    ``kv`` KV tokens in all. Rows with fewer than 1 token or request, and times
    that are not finite and positive, are skipped. Raises ``ValueError`` when a
    table is malformed (lengths that disagree).
    """
    raw, name = _load(profile)
    out: list[MeasuredPass] = []
    pre = raw.get("prefill")
    if isinstance(pre, dict):
        tok, ms = pre.get("new_tokens") or [], pre.get("ms") or []
        if len(tok) != len(ms):
            raise ValueError(f"profile {name}: prefill.new_tokens has {len(tok)} entries, prefill.ms {len(ms)}")
        for t, m in zip(tok, ms):
            t, m = _num(t), _num(m)
            if t >= 1 and m > 0:
                out.append(MeasuredPass("prefill", 1, int(round(t)), 0, 0, m))
    dec = raw.get("decode")
    if isinstance(dec, dict):
        kvs, ctxs, itl = dec.get("active_kv_tokens") or [], dec.get("context_length") or [], dec.get("itl_ms") or []
        if len(itl) != len(kvs):
            raise ValueError(f"profile {name}: decode.itl_ms has {len(itl)} rows, decode.active_kv_tokens "
                             f"{len(kvs)}")
        for i, (kv, row) in enumerate(zip(kvs, itl)):
            if not isinstance(row, (list, tuple)) or len(row) != len(ctxs):
                raise ValueError(f"profile {name}: decode.itl_ms row {i} must have {len(ctxs)} entries (one per "
                                 "context_length)")
            kv = _num(kv)
            for ctx, m in zip(ctxs, row):
                ctx, m = _num(ctx), _num(m)
                if not (kv > 0 and ctx > 0 and m > 0):
                    continue
                batch = int(round(kv / ctx))
                if batch >= 1:
                    out.append(MeasuredPass("decode", 0, 0, batch, int(round(kv)), m))
    return out


def profile_iterations(profile: str | Path | dict) -> list[dict]:
    """The measured passes of a profile as forward-pass metrics, one FPM dict per iteration.

    Each dict is ``{"scheduled_requests": {...}, "wall_time": seconds}`` for a
    single rank (``wall_time`` is the measured ms / 1000: the unit
    ``tune_with_fpms`` reads). Hand them to the model one iteration each,
    ``model.tune_with_fpms([[d] for d in iterations])`` (a flat list of dicts
    would be read as the ranks of one iteration); ``tune_aic_timing`` does this
    and splits each over the attention-DP ranks.
    """
    out = []
    for p in measured_passes(profile):
        d = fpm(*p.shape)[0]
        d["wall_time"] = p.ms / 1000.0
        out.append(d)
    return out


def profile_hardware(profile: str | Path | dict) -> HardwareSpec | None:
    """The hardware a profile was measured on, from a top-level ``hardware:`` mapping of ``HardwareSpec`` fields.

    ``None`` when the profile has no ``hardware`` or only a free-text label
    (``dynosim calibrate`` writes the server's description there). Raises
    ``ValueError`` naming the profile and the field when the mapping is invalid.
    """
    raw, name = _load(profile)
    hw = raw.get("hardware")
    if hw is None or isinstance(hw, str):
        return None
    if not isinstance(hw, dict):
        raise ValueError(f"profile {name}: hardware must be a mapping of hardware fields (model, system, backend, "
                         f"tp, ...), got {type(hw).__name__}")
    from pydantic import ValidationError

    try:
        return HardwareSpec(**hw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        where = f"hardware.{loc}" if loc else "hardware"
        msg = str(err.get("msg", exc))
        raise ValueError(f"profile {name}: {where}: {msg}") from None
    except HardwareError as exc:  # raised by a property outside pydantic's validation
        raise ValueError(f"profile {name}: hardware: {exc}") from None


def hardware_section(hw: HardwareSpec) -> dict:
    """``hw`` as a profile's ``hardware:`` mapping (fields that differ from their defaults, plus model and system)."""
    data = hw.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("model", hw.model)
    data.setdefault("system", hw.system)
    return data


# ---------------------------------------------------------------------------------------------------------------
# tuning


@dataclass(frozen=True)
class TuningReport:
    """What was folded into the database model, and the corrections it learned."""

    profile: str
    iterations: int  # measured passes folded in (prefill + decode)
    prefill_iterations: int
    decode_iterations: int
    min_correction: float | None  # over the correction buckets the data made ready (None: none ready)
    max_correction: float | None
    avg_correction: float | None
    options: dict = field(default_factory=dict)  # the model's constructor options (grid ranges, bounds)
    source: str = ""  # the tuned timing's source label

    def summary(self) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        return (f"{self.source}: {self.iterations} measured passes ({self.prefill_iterations} prefill, "
                f"{self.decode_iterations} decode); corrections min {f(self.min_correction)}, "
                f"avg {f(self.avg_correction)}, max {f(self.max_correction)}")


def tuning_options(passes: list[MeasuredPass], min_faster: float | None = MIN_FASTER,
                   max_slower: float | None = MAX_SLOWER) -> dict:
    """Constructor options whose correction grid covers ``passes`` (never below the model's own defaults)."""
    return {
        "max_num_tokens": max([DEFAULT_MAX_NUM_TOKENS] + [p.prefill_tokens for p in passes]),
        "max_batch_size": max([DEFAULT_MAX_BATCH_SIZE] + [p.n_decode for p in passes]),
        "max_kv_tokens": max([DEFAULT_MAX_KV_TOKENS] + [p.decode_kv for p in passes]),
        "min_faster_correction_factor": min_faster,
        "max_slower_correction_factor": max_slower,
    }


def build_tunable_model(hw: HardwareSpec, nextn: int, options: dict):
    """A fresh strict native model for ``hw`` with ``options`` (its own object: tuning it touches nothing else)."""
    quiet_aic_logs()
    from aiconfigurator_core.sdk.rust_engine_step import RustForwardPassPerfModel

    try:
        model = RustForwardPassPerfModel.from_native(aic_config(hw, nextn), options)
    except Exception as exc:  # the database raises ValueError or its own PerfDataNotAvailableError
        msg = str(exc).split("\n")[0][:300]
        raise HardwareError(f"the database cannot price {hw.label()}: {msg}") from None
    if model.diagnostics().get("source") != "aic":
        raise HardwareError(f"the database answered {hw.label()} with {model.diagnostics().get('source')!r}, "
                            "not measured data")
    return model


def tune_aic_timing(hw: HardwareSpec | None, profile: str | Path | dict, nextn: int = 0, *,
                    min_faster: float | None = MIN_FASTER,
                    max_slower: float | None = MAX_SLOWER) -> tuple[AicTiming, TuningReport]:
    """``--timing aic`` for ``hw`` tuned with ``profile``'s measured passes, and what the tuning did.

    ``hw`` ``None`` takes the profile's own ``hardware:`` mapping. Raises
    ``ValueError`` when the profile has no usable table entry (or no hardware
    is given either way), ``HardwareError`` when the database cannot price
    ``hw``.
    """
    _, name = _load(profile)
    if hw is None:
        hw = profile_hardware(profile)
        if hw is None:
            raise ValueError(f"profile {name}: no hardware given and the profile has no hardware: mapping "
                             "(model, system, ...)")
    passes = measured_passes(profile)
    if not passes:
        raise ValueError(f"profile {name}: no usable measured pass to tune with (prefill rows need new_tokens >= 1 "
                         "and ms > 0; decode cells need active_kv_tokens / context_length >= 1 and a finite "
                         "itl_ms > 0)")
    options = tuning_options(passes, min_faster, max_slower)
    model = build_tunable_model(hw, nextn, options)
    iterations = []
    for p in passes:
        ranks = fpm(*p.shape, hw.dp)
        for r in ranks:  # every rank saw the same pass: its wall time is the iteration's
            r["wall_time"] = p.ms / 1000.0
        iterations.append(ranks)
    model.tune_with_fpms(iterations)
    source = f"aic+tuned:{name}"
    n_pre = sum(p.kind == "prefill" for p in passes)
    report = TuningReport(profile=name, iterations=len(passes), prefill_iterations=n_pre,
                          decode_iterations=len(passes) - n_pre,
                          min_correction=model.get_min_correction_factor(),
                          max_correction=model.get_max_correction_factor(),
                          avg_correction=model.get_avg_correction_factor(),
                          options=options, source=source)
    return AicTiming(hw, nextn, perf_model=model, source=source), report


def tuned_aic_timing(hw: HardwareSpec | None, profile: str | Path | dict, nextn: int = 0) -> AicTiming:
    """``tune_aic_timing`` without the report (its ``source`` is ``aic+tuned:<profile>``)."""
    return tune_aic_timing(hw, profile, nextn)[0]


def profile_error(timing: AicTiming, profile: str | Path | dict) -> dict[str, float]:
    """Mean absolute relative error of ``timing``'s direct prices against the profile's measured passes.

    ``{"prefill": ..., "decode": ..., "all": ...}`` (NaN for a kind with no entry).
    """
    errs: dict[str, list[float]] = {"prefill": [], "decode": []}
    for p in measured_passes(profile):
        errs[p.kind].append(abs(timing.direct_ms(*p.shape) / p.ms - 1.0))

    def mean(v: list[float]) -> float:
        return sum(v) / len(v) if v else math.nan

    return {"prefill": mean(errs["prefill"]), "decode": mean(errs["decode"]),
            "all": mean(errs["prefill"] + errs["decode"])}


def fold_into_database(profile: str | Path, hw: HardwareSpec) -> tuple[TuningReport, dict, dict]:
    """Record ``hw`` in the profile file (its ``hardware:`` mapping; a free-text note moves to
    ``hardware_note``) and tune the database with its passes.

    Returns the tuning report and the mean relative errors against the measurements before and after,
    so ``dynosim calibrate --system`` can say what the measurements changed.
    """
    import yaml

    path = Path(profile)
    raw = yaml.safe_load(path.read_text()) or {}
    if isinstance(raw.get("hardware"), str):
        raw["hardware_note"] = raw.pop("hardware")
    raw["hardware"] = hardware_section(hw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    from dynosim.hardware.aic import AicTiming, build_perf_model

    before = profile_error(AicTiming(hw, perf_model=build_perf_model(hw)), path)
    timing, report = tune_aic_timing(hw, path)
    return report, before, profile_error(timing, path)
