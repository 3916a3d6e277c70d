"""What a calibration measures: the ``CalibrationPlan`` (grids of prompt lengths, bursts, decode batches and
contexts, repeats, window requirements), checked on construction, and ``CalibrationError``.

The plan is plain data: ``measure`` sends what it asks for, ``fit`` and ``profile`` record it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CalibrationError(RuntimeError):
    """Calibration could not measure the engine; the message names the endpoint and what was asked."""


def _check_grid(name: str, values: tuple[int, ...]) -> None:
    if not values:
        raise ValueError(f"{name} must not be empty")
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive, got {list(values)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {list(values)}")


class CalibrationPlan(BaseModel):
    """What to measure. Grids are strictly increasing positive integers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefill_lengths: tuple[int, ...] = Field((32, 64, 128, 256, 512, 1024, 1536),
                                             description="prompt lengths (new tokens) of the prefill points")
    prefill_repeats: int = Field(5, ge=1, description="requests per prefill point (median)")
    warmup: bool = Field(True, description="send one discarded request first")
    prefill_batches: tuple[int, ...] = Field((1, 2, 4, 8), description="simultaneous prompts of the prefill-batch "
                                             "points (per-request cost of a prefill pass)")
    prefill_batch_length: int = Field(128, ge=1, description="prompt length of the prefill-batch points")
    prefill_batch_repeats: int = Field(3, ge=1, description="bursts per prefill-batch point (median)")
    decode_batches: tuple[int, ...] = Field((1, 2, 4, 8, 16), description="concurrent streams of the decode points")
    decode_contexts: tuple[int, ...] = Field((128, 512, 1024), description="prompt lengths of the decode points")
    decode_tokens: int = Field(48, ge=4, description="max_tokens of each decode stream")
    decode_repeats: int = Field(2, ge=1, description="batches per decode point (median)")
    min_window_steps: int = Field(8, ge=1, description="decode steps with all streams running needed per batch")
    max_decode_tokens: int = Field(512, ge=4, description="cap on max_tokens when a batch is rerun for a longer window")
    max_model_len: int | None = Field(None, gt=0, description="the engine's context limit (checked when known)")

    @model_validator(mode="after")
    def _check(self) -> "CalibrationPlan":
        _check_grid("prefill_lengths", self.prefill_lengths)
        _check_grid("decode_batches", self.decode_batches)
        _check_grid("prefill_batches", self.prefill_batches)
        _check_grid("decode_contexts", self.decode_contexts)
        if self.min_window_steps >= self.decode_tokens:
            raise ValueError(f"min_window_steps ({self.min_window_steps}) must be below decode_tokens "
                             f"({self.decode_tokens})")
        if self.decode_tokens > self.max_decode_tokens:
            raise ValueError(f"decode_tokens ({self.decode_tokens}) exceeds max_decode_tokens "
                             f"({self.max_decode_tokens})")
        m = self.max_model_len
        if m is not None:
            if self.prefill_lengths[-1] + 1 > m:
                raise ValueError(f"prefill length {self.prefill_lengths[-1]} + 1 output token exceeds "
                                 f"max_model_len {m}")
            if self.decode_contexts[-1] + self.decode_tokens > m:
                raise ValueError(f"decode context {self.decode_contexts[-1]} + decode_tokens {self.decode_tokens} "
                                 f"exceeds max_model_len {m}")
        return self

    @classmethod
    def quick(cls, **overrides) -> "CalibrationPlan":
        """A small plan (3 prefill lengths, 2 × 2 decode points, 2 repeats) for tests and CI."""
        base = dict(prefill_lengths=(32, 128, 512), prefill_repeats=2, prefill_batches=(1, 4),
                    prefill_batch_repeats=2, decode_batches=(1, 4),
                    decode_contexts=(128, 512), decode_tokens=24, decode_repeats=2, min_window_steps=6)
        return cls(**{**base, **overrides})

    def with_max_model_len(self, max_model_len: int) -> "CalibrationPlan":
        """This plan checked against an engine's ``max_model_len`` (raises ``ValidationError`` if it does not fit)."""
        return type(self).model_validate({**self.model_dump(), "max_model_len": max_model_len})

    def n_requests(self) -> int:
        """Requests the plan sends when no decode batch has to be rerun."""
        return (int(self.warmup) + len(self.prefill_lengths) * self.prefill_repeats
                + sum(self.prefill_batches) * self.prefill_batch_repeats
                + sum(self.decode_batches) * len(self.decode_contexts) * self.decode_repeats)

    def estimate_s(self, *, step_ms: float = 6.0, prefill_ms_per_token: float = 0.05,
                   request_overhead_ms: float = 20.0) -> float:
        """Rough wall time of the plan: each request's overhead and prefill, each decode batch's steps."""
        pre = sum(request_overhead_ms + prefill_ms_per_token * n for n in self.prefill_lengths) * self.prefill_repeats
        dec = 0.0
        for b in self.decode_batches:
            for c in self.decode_contexts:
                dec += request_overhead_ms + prefill_ms_per_token * b * c + self.decode_tokens * step_ms
        return (pre + dec * self.decode_repeats + (request_overhead_ms if self.warmup else 0.0)) / 1000.0
