"""Timing calibration: measure a live engine's passes from the outside, fit them, write a profile for the simulator.

``calibrate(base_url, model, plan)`` drives an OpenAI-compatible engine (vLLM)
with requests shaped to expose one kind of pass at a time and returns a
``CalibrationResult``; ``write_profile(result, path)`` writes it as a profile
that ``--timing interpolated --timing-profile FILE`` (tables) and ``--timing
polynomial --timing-profile FILE`` (least-squares quadratics) both accept.

- ``plan``: what to measure (``CalibrationPlan``) and ``CalibrationError``;
- ``measure``: driving the live engine and collecting per-pass timings (``calibrate``, ``decode_window``);
- ``result``: what was measured (the points and ``CalibrationResult``);
- ``fit``: the model fit (prefill and decode tables, client latency, pass overhead, polynomials, and the
  burst fit, which replays bursts through the simulator by ``dynosim.run``);
- ``profile``: the profile as a dict and the YAML/JSON file (``write_profile``).

May import: aiohttp, numpy, pydantic, yaml, ``dynosim.engines.live`` (the client and metrics; ``measure``
only), ``dynosim.traces``, the simulator only through its public entry point (``dynosim.run``,
``dynosim.RunConfig``, ``dynosim.MockerArgs``; ``fit`` only) and one engine-model helper
(``dynosim.engines.mocker.timing.interp1_extrap``, ``fit.per_request_prefill_ms``).
"""

from __future__ import annotations

from dynosim.validate.calibrate.plan import CalibrationError, CalibrationPlan
from dynosim.validate.calibrate.fit import (ADMIT_GRID_MS, PER_REQUEST_GRID_MS, fit_bursts, per_request_prefill_ms,
                                            resample_columns)
from dynosim.validate.calibrate.profile import profile_dict, write_profile
from dynosim.validate.calibrate.result import (CalibrationResult, DecodePoint, DecodeSample, PrefillBatchPoint,
                                               PrefillPoint)
from dynosim.validate.calibrate.measure import CACHE_CONFIG_METRIC, Progress, calibrate, decode_window

__all__ = ["ADMIT_GRID_MS", "CACHE_CONFIG_METRIC", "CalibrationError", "CalibrationPlan", "CalibrationResult",
           "DecodePoint", "DecodeSample", "PER_REQUEST_GRID_MS", "PrefillBatchPoint", "PrefillPoint", "Progress",
           "calibrate", "decode_window", "fit_bursts", "per_request_prefill_ms", "profile_dict",
           "resample_columns", "write_profile"]
