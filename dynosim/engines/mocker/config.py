"""Engine arguments of the mocker, with Dynamo's mocker defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MockerArgs(BaseModel):
    """What one simulated vLLM-style engine looks like (per data-parallel rank)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_size: int = Field(64, gt=0, description="tokens per KV block")
    num_gpu_blocks: int = Field(16384, gt=0, description="KV capacity in blocks")
    max_num_seqs: int = Field(256, gt=0, description="cap on running requests")
    max_num_batched_tokens: int = Field(8192, gt=0, description="token budget of one pass")
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    preemption_mode: Literal["lifo", "fifo"] = "lifo"
    speedup_ratio: float = Field(1.0, gt=0)
    decode_speedup_ratio: float = Field(1.0, gt=0)
    timing: str = Field("polynomial", description="timing model name (polynomial, interpolated)")
    timing_profile: str | None = Field(None, description="profile file or bundled name for table models")
    timing_params: dict[str, float | list[float]] = Field(
        default_factory=dict, description="model parameters, e.g. fixed: prefill_ms, decode_ms; "
                                          "polynomial: prefill_coeffs, decode_coeffs ([a, b, c])")
    gpus_per_worker: int = Field(1, gt=0, description="GPUs one worker occupies (TP × PP), for per-GPU metrics")
    admit_interval_ms: float = Field(0.0, ge=0, allow_inf_nan=False,
                                     description="requests reach the engine at least this far apart (a real "
                                                 "server handles requests one by one); 0: all at once, as "
                                                 "Dynamo's mocker")
    client_latency_ms: float = Field(0.0, ge=0, allow_inf_nan=False,
                                     description="fixed delay from the engine producing a token to the client "
                                                 "seeing it (request and output handling): shifts TTFT and E2E, "
                                                 "not ITL or pass times; 0: Dynamo's mocker")

    @model_validator(mode="after")
    def _check(self) -> "MockerArgs":
        if self.max_num_seqs > self.max_num_batched_tokens:
            raise ValueError(
                f"max_num_seqs ({self.max_num_seqs}) exceeds max_num_batched_tokens "
                f"({self.max_num_batched_tokens}): a full decode batch could never be scheduled")
        return self
