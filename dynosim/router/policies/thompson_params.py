"""The Thompson router's parameters: NAT's defaults, the two presets, overrides and their validation.

Parameters are named by their NAT ``config.yaml`` dotted paths (``PARAM_DEFAULTS``
holds each one's value in both presets): ``preset="tuned"`` (the default) takes the
optimized ``config.yaml`` values, ``preset="original"`` the generalized CLI /
PARAMETERS.md values. ``resolve_params(preset, params)`` overrides them by dotted
name or by a nested dict shaped like ``config.yaml``, casts numeric strings, refuses
unknown names and out-of-range values (``ValueError``), and accepts the
``INERT_PARAMS`` a whole NAT config carries but the simulator has no use for.

The policy itself is ``thompson.ThompsonPolicy``; the hints it reads are ``dynosim.router.hints``.
"""

from __future__ import annotations

from typing import Any, Mapping

from dynosim.router.hints import finite_number

# dotted config path -> (orig. default, tuned config.yaml)
PARAM_DEFAULTS: dict[str, tuple[Any, Any]] = {
    "infrastructure.router_type": ("kv", "kv"),
    "affinity.base": (0.30, 0.30),
    "affinity.reuse_weight": (0.15, 0.08),
    "affinity.iat_weight": (0.20, 0.20),
    "affinity.sticky_load_floor": (0.70, 0.01),
    "exploration.base_ts_weight": (0.10, 0.10),
    "exploration.temperature.base": (1.0, 1.0),
    "exploration.temperature.min": (0.15, 0.15),
    "exploration.temperature.max": (2.0, 2.0),
    "switching_cost.base": (0.20, 0.10),
    "switching_cost.reuse_penalty": (0.08, 0.04),
    "switching_cost.iat_penalty": (0.05, 0.03),
    "load_balancing.queue_penalty_weight": (0.50, 1.50),
    "load_balancing.gpu_penalty_weight": (1.00, 1.00),
    "load_balancing.outstanding_work_weight": (0.45, 0.45),
    "load_balancing.job_gpu_coupling_weight": (0.40, 0.40),
    "load_balancing.job_queue_coupling_weight": (0.20, 0.20),
    "prefill.token_scale": (1024.0, 1024.0),
    "prefill.weight": (1.0, 1.0),
    "lints.lambda": (1.0, 1.0),
    "lints.v": (0.25, 0.25),
    "lints.forget_rate": (0.995, 0.995),
    "feedback.timeout_seconds": (120.0, 120.0),
    "feedback.sweep_interval_seconds": (5.0, 5.0),
    "feedback.timeout_reward": (0.0, 0.0),
    "feedback.latency_ema_alpha": (0.2, 0.2),
}

# Accepted so a whole NAT config.yaml can be passed, but inert here: the overlap comes from the
# simulator's indexer at the engine block size, workers are the simulator's, and debug traces
# are replaced by ``record=True``.
INERT_PARAMS = frozenset({"infrastructure.block_size", "infrastructure.min_workers",
                          "debug.traces_enabled", "debug.trace_dir", "debug.buffer_size"})

PRESETS = ("original", "tuned")


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resolve_params(preset: str = "tuned", params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``preset`` overridden by ``params`` (dotted names, or nested dicts as in config.yaml)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown thompson preset {preset!r}; choose from {list(PRESETS)}")
    col = PRESETS.index(preset)
    out = {k: v[col] for k, v in PARAM_DEFAULTS.items()}
    given = _flatten(params or {})
    unknown = sorted(k for k in given if k not in PARAM_DEFAULTS and k not in INERT_PARAMS)
    if unknown:
        raise ValueError(f"unknown thompson router parameter(s): {', '.join(unknown)}; "
                         f"known: {sorted(PARAM_DEFAULTS)}")
    for k, v in given.items():
        if k in INERT_PARAMS:
            continue
        if k == "infrastructure.router_type":
            v = str(v).strip()
            if v not in ("kv", "kv_load"):
                raise ValueError(f"infrastructure.router_type must be 'kv' or 'kv_load', got {v!r}")
        else:
            x = finite_number(v)
            if x is None:
                raise ValueError(f"thompson parameter {k} must be a finite number, got {v!r}")
            v = x
        out[k] = v
    p = out
    if p["exploration.temperature.min"] <= 0 or p["exploration.temperature.min"] > p["exploration.temperature.max"]:
        raise ValueError("need 0 < exploration.temperature.min <= exploration.temperature.max")
    if p["exploration.temperature.base"] <= 0:
        raise ValueError("exploration.temperature.base must be > 0")
    if p["prefill.token_scale"] <= 0:
        raise ValueError("prefill.token_scale must be > 0")
    if p["lints.lambda"] <= 0 or p["lints.v"] < 0:
        raise ValueError("need lints.lambda > 0 and lints.v >= 0")
    if not 0 < p["lints.forget_rate"] <= 1:
        raise ValueError("lints.forget_rate must be in (0, 1]")
    if not 0 < p["feedback.latency_ema_alpha"] <= 1:
        raise ValueError("feedback.latency_ema_alpha must be in (0, 1]")
    if p["feedback.timeout_seconds"] <= 0 or p["feedback.sweep_interval_seconds"] < 0:
        raise ValueError("need feedback.timeout_seconds > 0 and feedback.sweep_interval_seconds >= 0")
    return out


__all__ = ["INERT_PARAMS", "PARAM_DEFAULTS", "PRESETS", "resolve_params"]
