"""Writing a calibration as a timing profile the simulator loads.

``profile_dict(result)`` lays a ``CalibrationResult`` out as a profile: the
``engine`` section (KV cache facts from ``vllm:cache_config_info`` or given,
client latency, admission interval), the ``prefill`` and ``decode`` tables,
the ``polynomial`` fits, the ``plan``, and under ``raw`` every measurement (to
refit later) with the burst fit. ``write_profile(result, path)`` writes it as
YAML (with a header comment) or JSON; ``--timing interpolated --timing-profile
FILE`` (tables) and ``--timing polynomial --timing-profile FILE`` both accept it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from dynosim.validate.calibrate.fit import (_r, client_latency_ms, decode_table, fit_bursts, pass_overhead_ms,
                                            per_request_prefill_ms, polynomial, prefill_table)

if TYPE_CHECKING:  # pragma: no cover
    from dynosim.validate.calibrate.result import CalibrationResult


def profile_dict(result: CalibrationResult) -> dict:
    """The profile as a dict (what ``write_profile`` writes): tables, polynomials, engine facts, raw points."""
    engine: dict = {}
    if result.block_size is not None:
        engine["block_size"] = int(result.block_size)
    if result.num_gpu_blocks is not None:
        engine["num_gpu_blocks"] = int(result.num_gpu_blocks)
    if result.max_kv_tokens is not None:
        engine["max_kv_tokens"] = int(result.max_kv_tokens)
    if not ("block_size" in engine and "num_gpu_blocks" in engine):
        engine["note"] = ("the server did not expose block_size/num_gpu_blocks (vllm:cache_config_info) and "
                          "none were given: KV capacity unknown; the polynomial decode fit is left out")
    if result.engine_source:
        engine["source"] = result.engine_source
    if result.max_model_len is not None:
        engine["max_model_len"] = int(result.max_model_len)
    if result.cache_config is not None:
        engine["cache_config"] = dict(result.cache_config)
    tok, ms = prefill_table(result)
    kv, ctx, itl = decode_table(result)
    poly = polynomial(result)
    poly["note"] = ("numpy.polyfit quadratics, highest power first: prefill ms vs new tokens in the pass; "
                    "decode ms vs active_kv_tokens / max_kv_tokens")
    raw_decode = []
    for p in result.decode:
        for s in p.samples:
            raw_decode.append({"batch": s.batch, "context": s.context, "max_tokens": s.max_tokens,
                               "itl_ms": _r(s.itl_ms), "active_kv_tokens": _r(s.active_kv_tokens, 1),
                               "mean_context": _r(s.mean_context, 2), "window_steps": s.window_steps,
                               "window_ms": _r(s.window_ms, 2), "stagger_tokens": s.stagger_tokens,
                               "gaps": s.gaps,
                               "median_gap_ms": None if s.median_gap_ms is None else _r(s.median_gap_ms)})
    out = {
        "model": result.model,
        "hardware": result.hardware,
        "calibrated_at": result.calibrated_at,
        "source": result.source,
        "tool": "dynosim calibrate",
        "engine": engine,
        "prefill": {"new_tokens": [int(t) for t in tok], "ms": [_r(v) for v in ms]},
        "decode": {"active_kv_tokens": [int(v) for v in kv], "context_length": [_r(v, 1) for v in ctx],
                   "itl_ms": [[_r(v) for v in row] for row in itl]},
        "polynomial": poly,
        "plan": _plain(result.plan.model_dump()),
        "raw": {
            "prefill": [{"new_tokens": p.new_tokens, "ttft_ms": [_r(v) for v in p.ttft_ms]}
                        for p in sorted(result.prefill, key=lambda p: p.new_tokens)],
            "decode": raw_decode,
        },
    }
    engine["client_latency_ms"] = _r(client_latency_ms(result))
    overhead = pass_overhead_ms(result)
    if overhead:
        out["decode"]["pass_overhead_ms"] = _r(min(overhead, float(ms[0])))
    fit = fit_bursts(result.prefill_batch, out, result.block_size, engine["client_latency_ms"])
    if fit is not None:
        out["prefill"]["per_request_ms"] = fit["per_request_ms"]
        out["engine"]["admit_interval_ms"] = fit["admit_interval_ms"]
        out["raw"]["burst_fit"] = _plain({
            "method": "simulated bursts on a grid; least squared error of mean TTFT",
            "rms_error_ms": _r(fit["rms_error_ms"]),
            "measured_mean_ttft_ms": {int(k): _r(v) for k, v in fit["measured"].items()},
            "simulated_mean_ttft_ms": {int(k): _r(v) for k, v in fit["simulated"].items()},
            "slope_fit_per_request_ms": _r(per_request_prefill_ms(result.prefill_batch, tok, ms) or 0.0)})
    if result.prefill_batch:
        out["raw"]["prefill_batch"] = [{"batch": p.batch, "length": p.length,
                                        "mean_ttft_ms": [_r(v) for v in p.mean_ttft_ms]}
                                       for p in result.prefill_batch]
    if result.skipped:
        out["raw"]["skipped"] = [dict(s) for s in result.skipped]
    if result.notes:
        out["notes"] = list(result.notes)
    return out


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


_HEADER = """\
# Timing profile measured by `dynosim calibrate` from the outside of a live engine.
# prefill: median client TTFT of lone max_tokens=1 requests by prompt length, less engine.client_latency_ms
#   (the fixed request/output handling a client sees, which the simulator adds to every token time).
# decode: median step time with all of a batch decoding, on a common active_kv_tokens axis;
#   each context column is resampled linearly onto it (end segments extrapolated, clamped).
# polynomial: least-squares quadratics (highest power first). raw: every measurement, to refit.
# Use: --timing interpolated --timing-profile THIS_FILE  (or --timing polynomial --timing-profile THIS_FILE)
"""


def write_profile(result: CalibrationResult, path: str | Path) -> Path:
    """Write the profile as YAML (``.yaml``/``.yml``, with a header comment) or JSON (``.json``)."""
    path = Path(path)
    data = profile_dict(result)
    if path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        text = _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
    else:
        raise ValueError(f"profile path must end in .yaml, .yml or .json, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
