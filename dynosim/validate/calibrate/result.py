"""What a calibration measured: the points (lone prefills, prefill bursts, decode batches) and the
``CalibrationResult`` that holds them with the engine's KV cache facts.

The figures derived from a result are computed in ``fit`` (tables, client latency, pass overhead,
polynomials) and its profile in ``profile``; the result's methods are their face to callers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from dynosim.validate.calibrate import fit, profile
from dynosim.validate.calibrate.plan import CalibrationPlan


@dataclass
class PrefillPoint:
    new_tokens: int
    ttft_ms: list[float] = field(default_factory=list)   # one per repeat

    @property
    def ms(self) -> float:
        return float(statistics.median(self.ttft_ms))


@dataclass
class PrefillBatchPoint:
    """``batch`` prompts of ``length`` tokens sent at once: mean TTFT of the burst, one per repeat."""

    batch: int
    length: int
    mean_ttft_ms: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return float(statistics.median(self.mean_ttft_ms))


@dataclass
class DecodeSample:
    """One decode batch: the step time in its all-running window and the batch's shape at mid-window."""

    batch: int
    context: int
    max_tokens: int
    itl_ms: float              # step time: median over streams of their in-window ms per token (Theil-Sen)
    active_kv_tokens: float    # sum over streams of (prompt + generated) at mid-window
    mean_context: float        # active_kv_tokens / batch
    window_steps: int          # median number of in-window gaps per stream
    window_ms: float
    stagger_tokens: int        # most tokens a stream had before the last stream's first token
    gaps: int                  # in-window gaps counted, all streams
    median_gap_ms: float | None = None  # median of the single in-window gaps (reference)


@dataclass
class DecodePoint:
    batch: int
    context: int
    samples: list[DecodeSample] = field(default_factory=list)

    @property
    def itl_ms(self) -> float:
        return float(statistics.median(s.itl_ms for s in self.samples))

    @property
    def active_kv_tokens(self) -> float:
        return float(statistics.median(s.active_kv_tokens for s in self.samples))

    @property
    def mean_context(self) -> float:
        return float(statistics.median(s.mean_context for s in self.samples))


@dataclass
class CalibrationResult:
    model: str
    source: str
    hardware: str
    calibrated_at: str
    plan: CalibrationPlan
    prefill: list[PrefillPoint]
    decode: list[DecodePoint]
    prefill_batch: list[PrefillBatchPoint] = field(default_factory=list)
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    engine_source: str | None = None          # where block_size / num_gpu_blocks came from
    cache_config: dict[str, str] | None = None  # vllm:cache_config_info labels, as reported
    max_model_len: int | None = None
    skipped: list[dict] = field(default_factory=list)  # decode points not measured, with why
    notes: list[str] = field(default_factory=list)

    @property
    def max_kv_tokens(self) -> int | None:
        if self.block_size is None or self.num_gpu_blocks is None:
            return None
        return self.block_size * self.num_gpu_blocks

    def prefill_client_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Median client TTFT of lone prompts by length, as measured."""
        return fit.prefill_client_table(self)

    def client_latency_ms(self) -> float:
        """Fixed latency a client sees on top of the engine's passes (``fit.client_latency_ms``)."""
        return fit.client_latency_ms(self)

    def pass_overhead_ms(self) -> float:
        """Fixed cost of a forward pass (``fit.pass_overhead_ms``)."""
        return fit.pass_overhead_ms(self)

    def prefill_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Prefill pass time by new tokens: the client TTFT less ``client_latency_ms`` (floored at 0.1 ms)."""
        return fit.prefill_table(self)

    def decode_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(active_kv_tokens, context_length, itl_ms)`` for ``InterpolatedTiming`` (``fit.decode_table``)."""
        return fit.decode_table(self)

    def polynomial(self) -> dict:
        """``{prefill_coeffs, decode_coeffs}`` least-squares quadratics (decode only with a known KV capacity)."""
        return fit.polynomial(self)

    def to_profile_dict(self) -> dict:
        """The profile ``write_profile`` writes, as a dict (``profile.profile_dict``)."""
        return profile.profile_dict(self)
