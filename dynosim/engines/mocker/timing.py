"""Pass timing models for the mocker engine, selected by name.

A scheduler pass lasts ``prefill_ms(...) + decode_ms(...)`` divided by the
speed-up ratios, as in Dynamo's mocker. Models are pure functions of the pass
shape so they can be swapped (``--timing polynomial|interpolated``) and
calibrated against live engines.

Profiles (YAML/JSON, as ``dynosim calibrate`` writes them) may carry, next to
the ``prefill``/``decode`` tables of the interpolated model, a
``polynomial: {prefill_coeffs: [a, b, c], decode_coeffs: [a, b, c]}`` section
(highest power first, as ``numpy.polyfit``) that the polynomial model reads
when given the profile, and an ``engine: {block_size, num_gpu_blocks}``
section (``profile_engine_args``) so a simulation can match the measured
engine's KV capacity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

# Dynamo mocker's default polynomial fit (prefill from the new tokens in the
# pass, decode from KV utilisation), in milliseconds.
PREFILL_COEFFS = (4.209989e-07, 1.518344e-02, 16.50142)
DECODE_COEFFS = (-25.74, 54.01, 5.74)
DECODE_FLOOR_MS = 1.0


class TimingModel(Protocol):
    """What the scheduler and the planner read of a timing model.

    ``whole_pass`` models (``aic``, ``roofline``) price a pass as one iteration
    with ``pass_ms``; the others add ``prefill_ms`` and ``decode_ms``, minus
    ``pass_overhead_ms`` once when a pass does both.
    """

    name: str
    whole_pass: bool
    pass_overhead_ms: float

    def prefill_ms(self, batch_size: int, mean_isl: int, mean_prefix: int) -> float:
        """Time of the prefill part of a pass (0 when nothing is prefilled)."""

    def decode_ms(self, active_kv_tokens: int, mean_ctx: float, total_kv_tokens: int) -> float:
        """Time of one decode step for the ready batch."""

    def decode_ms_vec(self, active_kv_tokens: np.ndarray, mean_ctx: np.ndarray, total_kv_tokens: int) -> np.ndarray:
        """``decode_ms`` over arrays (consecutive passes of a decode stretch)."""


@dataclass(frozen=True)
class PolynomialTiming:
    """Quadratic prefill in new tokens, quadratic decode in KV utilisation."""

    prefill_coeffs: tuple[float, float, float] = PREFILL_COEFFS
    decode_coeffs: tuple[float, float, float] = DECODE_COEFFS
    name: str = "polynomial"
    whole_pass = False
    pass_overhead_ms = 0.0

    def prefill_ms(self, batch_size: int, mean_isl: int, mean_prefix: int) -> float:
        t = batch_size * (mean_isl - mean_prefix)
        if t <= 0:
            return 0.0
        a, b, c = self.prefill_coeffs
        return a * t * t + b * t + c

    def decode_ms(self, active_kv_tokens: int, mean_ctx: float, total_kv_tokens: int) -> float:
        p = active_kv_tokens / total_kv_tokens if total_kv_tokens > 0 else 0.0
        if p > 1.0:
            p = 1.0
        a, b, c = self.decode_coeffs
        return max(DECODE_FLOOR_MS, a * p * p + b * p + c)

    def decode_ms_vec(self, active_kv_tokens: np.ndarray, mean_ctx: np.ndarray, total_kv_tokens: int) -> np.ndarray:
        if total_kv_tokens <= 0:
            p = np.zeros_like(active_kv_tokens, dtype=float)
        else:
            p = np.minimum(active_kv_tokens / total_kv_tokens, 1.0)
        a, b, c = self.decode_coeffs
        return np.maximum(DECODE_FLOOR_MS, a * p * p + b * p + c)


@dataclass(frozen=True)
class FixedTiming:
    """Constant prefill and decode costs per pass: structural tests and what-ifs."""

    prefill: float = 10.0
    decode: float = 5.0
    name: str = "fixed"
    whole_pass = False
    pass_overhead_ms = 0.0

    def __post_init__(self) -> None:
        if self.prefill < 0 or self.decode < 0:
            raise ValueError("fixed timing: prefill_ms and decode_ms must be >= 0")

    def prefill_ms(self, batch_size: int, mean_isl: int, mean_prefix: int) -> float:
        return self.prefill if batch_size * (mean_isl - mean_prefix) > 0 else 0.0

    def decode_ms(self, active_kv_tokens: int, mean_ctx: float, total_kv_tokens: int) -> float:
        return self.decode

    def decode_ms_vec(self, active_kv_tokens: np.ndarray, mean_ctx: np.ndarray, total_kv_tokens: int) -> np.ndarray:
        return np.full(len(active_kv_tokens), self.decode)


def interp1_extrap(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Piecewise-linear interpolation that extrapolates from the end segments."""
    n = len(xs)
    if n == 1:
        return float(ys[0])
    i = int(np.searchsorted(xs, x, side="right")) - 1
    i = min(max(i, 0), n - 2)
    x0, x1 = xs[i], xs[i + 1]
    w = (x - x0) / (x1 - x0)
    return float(ys[i] + w * (ys[i + 1] - ys[i]))


@dataclass(frozen=True)
class InterpolatedTiming:
    """Measured tables: prefill ms vs new tokens; decode ms vs (active KV tokens, context).

    Linear / bilinear interpolation with extrapolation, floors as the polynomial.
    ``prefill_per_request_ms`` (profile ``prefill.per_request_ms``, measured by
    ``dynosim calibrate`` from bursts of simultaneous prompts) adds a fixed cost
    per request beyond the first in a prefill pass: the per-request work of a
    real server (request setup, scheduling, output handling) that a token table
    cannot see. ``pass_overhead_ms`` (profile ``decode.pass_overhead_ms``) is
    the fixed cost of one forward pass that both tables contain; a pass that
    prefills and decodes is charged it once. Both are 0 by default, which is
    the published tables' (and Dynamo's) semantics.
    Tables come from a profile file (YAML or JSON, or Dynamo's NPZ keys) written
    by ``dynosim calibrate`` or taken from published measurements.
    """

    prefill_tokens: np.ndarray
    prefill_ms_table: np.ndarray
    decode_kv_tokens: np.ndarray
    decode_ctx: np.ndarray
    decode_itl: np.ndarray  # shape (len(decode_kv_tokens), len(decode_ctx))
    source: str = ""
    name: str = "interpolated"
    whole_pass = False
    prefill_per_request_ms: float = 0.0
    pass_overhead_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.decode_itl.shape != (len(self.decode_kv_tokens), len(self.decode_ctx)):
            raise ValueError(
                f"profile {self.source}: decode.itl_ms must have shape "
                f"({len(self.decode_kv_tokens)}, {len(self.decode_ctx)}), got {self.decode_itl.shape}"
            )
        for name, arr in (("prefill.new_tokens", self.prefill_tokens),
                          ("decode.active_kv_tokens", self.decode_kv_tokens),
                          ("decode.context_length", self.decode_ctx)):
            if len(arr) == 0 or np.any(np.diff(arr) <= 0):
                raise ValueError(f"profile {self.source}: {name} must be non-empty and strictly increasing")
        if not (self.prefill_per_request_ms >= 0 and np.isfinite(self.prefill_per_request_ms)):
            raise ValueError(f"profile {self.source}: prefill.per_request_ms must be a finite number >= 0")
        if not (self.pass_overhead_ms >= 0 and np.isfinite(self.pass_overhead_ms)):
            raise ValueError(f"profile {self.source}: decode.pass_overhead_ms must be a finite number >= 0")

    def prefill_ms(self, batch_size: int, mean_isl: int, mean_prefix: int) -> float:
        t = batch_size * (mean_isl - mean_prefix)
        if t <= 0:
            return 0.0
        extra = self.prefill_per_request_ms * (batch_size - 1) if batch_size > 1 else 0.0
        return max(0.0, interp1_extrap(t, self.prefill_tokens, self.prefill_ms_table)) + extra

    def decode_ms(self, active_kv_tokens: int, mean_ctx: float, total_kv_tokens: int) -> float:
        kv, ctx, z = self.decode_kv_tokens, self.decode_ctx, self.decode_itl
        if len(ctx) == 1:
            return max(DECODE_FLOOR_MS, interp1_extrap(active_kv_tokens, kv, z[:, 0]))
        j = min(max(int(np.searchsorted(ctx, mean_ctx, side="right")) - 1, 0), len(ctx) - 2)
        wc = (mean_ctx - ctx[j]) / (ctx[j + 1] - ctx[j])
        col = z[:, j] + wc * (z[:, j + 1] - z[:, j])
        return max(DECODE_FLOOR_MS, interp1_extrap(active_kv_tokens, kv, col))

    def decode_ms_vec(self, active_kv_tokens: np.ndarray, mean_ctx: np.ndarray, total_kv_tokens: int) -> np.ndarray:
        return np.array([self.decode_ms(float(a), float(c), total_kv_tokens)
                         for a, c in zip(active_kv_tokens, mean_ctx)])

    @classmethod
    def from_file(cls, path: str | Path) -> "InterpolatedTiming":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"timing profile not found: {path}")
        if path.is_dir():
            raise ValueError(f"profile {path}: is a directory, not a profile file")
        if path.suffix == ".npz":
            try:
                d = np.load(path)
            except (OSError, ValueError) as exc:
                raise ValueError(f"profile {path}: not a readable NPZ file ({exc})") from None
            need = ["prefill_isl", "prefill_ttft_ms", "decode_active_kv_tokens", "decode_context_length", "decode_itl"]
            missing = [k for k in need if k not in d]
            if missing:
                raise ValueError(f"profile {path}: missing arrays {missing}")
            return cls(np.asarray(d["prefill_isl"], float), np.asarray(d["prefill_ttft_ms"], float),
                       np.asarray(d["decode_active_kv_tokens"], float), np.asarray(d["decode_context_length"], float),
                       np.asarray(d["decode_itl"], float), source=str(path))
        raw = _read_profile_mapping(path)
        try:
            pre, dec = raw["prefill"], raw["decode"]
            return cls(np.asarray(pre["new_tokens"], float), np.asarray(pre["ms"], float),
                       np.asarray(dec["active_kv_tokens"], float), np.asarray(dec["context_length"], float),
                       np.asarray(dec["itl_ms"], float), source=str(path),
                       prefill_per_request_ms=float(pre.get("per_request_ms", 0.0)),
                       pass_overhead_ms=float(dec.get("pass_overhead_ms", 0.0)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"profile {path}: expected prefill.{{new_tokens,ms}} and "
                             f"decode.{{active_kv_tokens,context_length,itl_ms}} ({exc!r})") from None


_PROFILE_EXTS = (".yaml", ".yml", ".json", ".npz")


_BUNDLED = Path(__file__).resolve().parents[2] / "profiles"


def bundled_profiles() -> list[str]:
    """The names of the profiles shipped in ``dynosim/profiles``, sorted (what an unknown name is told)."""
    return sorted(p.stem for p in _BUNDLED.iterdir() if p.suffix in _PROFILE_EXTS) if _BUNDLED.is_dir() else []


def bundled_profile(name: str) -> Path:
    """Path of a profile shipped in ``dynosim/profiles`` (name without extension)."""
    for ext in _PROFILE_EXTS:
        p = _BUNDLED / f"{name}{ext}"
        if p.exists():
            return p
    names = ", ".join(bundled_profiles()) or "none"
    raise FileNotFoundError(f"no bundled profile named {name!r} (bundled: {names}); "
                            "or give the path of a profile file (`dynosim calibrate` writes one)")


def resolve_profile(profile: str | Path) -> Path:
    """A profile argument as a path: an existing or path-like name as is, else a bundled profile."""
    p = Path(profile)
    # A bare name is a bundled profile; mind names with dots ("llama3.1") that only look like suffixes.
    is_path = p.exists() or p.suffix in _PROFILE_EXTS or len(p.parts) > 1
    return p if is_path else bundled_profile(str(profile))


def load_profile_dict(profile: str | Path) -> dict:
    """The mapping in a YAML or JSON profile (file path or bundled name); NPZ profiles have none."""
    path = resolve_profile(profile)
    if not path.exists():
        raise FileNotFoundError(f"timing profile not found: {path}")
    if path.suffix == ".npz" and not path.is_dir():
        raise ValueError(f"profile {path}: an NPZ profile holds only the interpolated tables")
    return _read_profile_mapping(path)


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error in one line: what is wrong and where (line, column), without the parser's excerpt."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _read_profile_mapping(path: Path) -> dict:
    """The top-level mapping of a YAML/JSON profile; every problem is a ``ValueError`` naming the file."""
    if path.is_dir():
        raise ValueError(f"profile {path}: is a directory, not a profile file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"profile {path}: cannot read it ({exc})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"profile {path}: not valid YAML ({yaml_problem(exc)})") from None
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"profile {path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"profile {path}: expected a mapping at the top level")
    return raw


def profile_engine_args(profile: str | Path) -> dict[str, int | float]:
    """``{block_size, num_gpu_blocks, admit_interval_ms, client_latency_ms}`` from a profile's ``engine`` section."""
    raw = load_profile_dict(profile)
    eng = raw.get("engine")
    out: dict[str, int | float] = {}
    for key in ("admit_interval_ms", "client_latency_ms"):
        if isinstance(eng, dict) and eng.get(key) is not None:
            v = eng[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not np.isfinite(v):
                raise ValueError(f"profile {profile}: engine.{key} must be a number >= 0, got {v!r}")
            out[key] = float(v)
    if isinstance(eng, dict):
        for key in ("block_size", "num_gpu_blocks"):
            v = eng.get(key)
            if v is None or isinstance(v, bool):
                continue
            try:
                iv = int(v)
            except (TypeError, ValueError):
                raise ValueError(f"profile {profile}: engine.{key} must be an integer, got {v!r}") from None
            if iv <= 0 or iv != v:
                raise ValueError(f"profile {profile}: engine.{key} must be a positive integer, got {v!r}")
            out[key] = iv
    return out


def _coeffs(value, what: str) -> tuple[float, float, float]:
    try:
        c = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"polynomial {what} must be a list of 3 numbers [a, b, c], got {value!r}") from None
    if len(c) != 3 or not all(np.isfinite(c)):
        raise ValueError(f"polynomial {what} must be 3 finite numbers [a, b, c] (a*x^2 + b*x + c), got {value!r}")
    return c  # type: ignore[return-value]


def _make_polynomial(profile: str | None = None, prefill_coeffs=None, decode_coeffs=None) -> PolynomialTiming:
    """Dynamo's coefficients, or those of a profile's ``polynomial`` section, or given ones (these win)."""
    pre, dec = PREFILL_COEFFS, DECODE_COEFFS
    if profile:
        raw = load_profile_dict(profile)
        sec = raw.get("polynomial")
        if not isinstance(sec, dict) or not ({"prefill_coeffs", "decode_coeffs"} & set(sec)):
            raise ValueError(f"profile {profile}: no polynomial section (polynomial.prefill_coeffs / "
                             "polynomial.decode_coeffs) for timing model 'polynomial'")
        if sec.get("prefill_coeffs") is not None:
            pre = _coeffs(sec["prefill_coeffs"], f"prefill_coeffs in {profile}")
        if sec.get("decode_coeffs") is not None:
            dec = _coeffs(sec["decode_coeffs"], f"decode_coeffs in {profile}")
    if prefill_coeffs is not None:
        pre = _coeffs(prefill_coeffs, "prefill_coeffs")
    if decode_coeffs is not None:
        dec = _coeffs(decode_coeffs, "decode_coeffs")
    return PolynomialTiming(pre, dec)


def _make_interpolated(profile: str | None = None) -> InterpolatedTiming:
    if not profile:
        raise ValueError("timing model 'interpolated' needs a profile (--timing-profile FILE or bundled name)")
    return InterpolatedTiming.from_file(resolve_profile(profile))


def _make_fixed(profile: str | None = None, prefill_ms: float = 10.0, decode_ms: float = 5.0) -> FixedTiming:
    return FixedTiming(float(prefill_ms), float(decode_ms))


def _make_aic(profile: str | None = None, hardware=None, nextn: int = 0) -> TimingModel:
    """The measured database; with a profile, the database tuned with the profile's measured passes."""
    if hardware is None:
        raise ValueError("timing model 'aic' needs a hardware section (--model and --system)")
    if profile:
        from dynosim.hardware.tuning import tuned_aic_timing

        return tuned_aic_timing(hardware, profile, nextn)
    from dynosim.hardware.aic import aic_timing

    return aic_timing(hardware, nextn)


def _make_roofline(profile: str | None = None, hardware=None, nextn: int = 0) -> TimingModel:
    if hardware is None:
        raise ValueError("timing model 'roofline' needs a hardware section (--model and --system)")
    if profile:
        raise ValueError("timing model 'roofline' takes no profile (--timing-profile applies to interpolated, "
                         "polynomial and aic)")
    from dynosim.hardware.roofline import RooflineTiming

    return RooflineTiming(hardware, nextn)


TIMING_MODELS: dict[str, Callable[..., TimingModel]] = {
    "aic": _make_aic,
    "roofline": _make_roofline,
    "polynomial": _make_polynomial,
    "interpolated": _make_interpolated,
    "fixed": _make_fixed,
}
# models priced for a named model and GPU: they take the hardware section and the draft length
HARDWARE_TIMINGS = ("aic", "roofline")
# models that read a timing profile (the others ignore or refuse one: the CLI says so instead of dropping it)
PROFILE_TIMINGS = ("aic", "polynomial", "interpolated")


def make_timing(name: str, profile: str | None = None, params: dict | None = None, hardware=None,
                nextn: int = 0) -> TimingModel:
    try:
        factory = TIMING_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown timing model {name!r}; choose from {sorted(TIMING_MODELS)}") from None
    kw = dict(params or {})
    if name in HARDWARE_TIMINGS:
        if kw:
            raise ValueError(f"timing model {name!r} takes no parameters, got {sorted(kw)}")
        kw = {"hardware": hardware, "nextn": nextn}
    try:
        return factory(profile=profile, **kw)
    except TypeError as exc:
        raise ValueError(f"timing model {name!r}: bad parameters {sorted(params or {})} ({exc})") from None


def timing_for(args) -> TimingModel:
    """The timing model an engine's arguments (``MockerArgs``) name."""
    return make_timing(args.timing, args.timing_profile, args.timing_params, hardware=args.hardware,
                       nextn=args.nextn)


def timing_source(args) -> str:
    """How an engine's passes are priced, as the summary labels it."""
    if args.timing == "aic":
        return f"aic+tuned:{args.timing_profile}" if args.timing_profile else "aic"
    if args.timing == "roofline":
        return "roofline (uncalibrated)"
    if args.timing == "interpolated":
        return f"interpolated:{args.timing_profile}"
    if args.timing == "polynomial" and args.timing_profile:
        return f"polynomial:{args.timing_profile}"
    return args.timing
