"""Engine arguments of the mocker, with Dynamo's mocker defaults.

With a ``hardware`` section (model, GPU system, engine, parallelism) three
fields follow from it unless given: the KV capacity (``num_gpu_blocks``, from
memory), the GPUs a worker holds (``gpus_per_worker`` = TP × PP × DP) and the
timing model (``aic``: every pass priced from the measured database).
``kv_blocks_source`` records where the capacity came from, so a pool that
changes the hardware (``disagg.decode_engine: {hardware: {tp: 2}}``) gets its
own capacity while an explicit ``num_gpu_blocks`` always wins.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.hardware.spec import HardwareSpec

DEFAULT_NUM_GPU_BLOCKS = 16384
DEFAULT_ACCEPT_RATES = (0.85, 0.3, 0.0, 0.0, 0.0)   # Dynamo's default per-position acceptance (conditional)
MAX_NEXTN = 5


def merge_engine(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Engine fields ``over`` on top of ``base``; a ``hardware`` override changes only the fields it names
    (``{hardware: {tp: 2}}`` keeps the model and system)."""
    out = {**base, **over}
    if isinstance(over.get("hardware"), dict) and isinstance(base.get("hardware"), dict):
        out["hardware"] = {**base["hardware"], **over["hardware"]}
    return out


class MockerArgs(BaseModel):
    """What one simulated vLLM-style engine looks like (per data-parallel rank)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine_type: str = Field("vllm", description="the engine's scheduling model, by name (engines/mocker/registry.py)")
    block_size: int = Field(64, gt=0, description="tokens per KV block")
    num_gpu_blocks: int = Field(DEFAULT_NUM_GPU_BLOCKS, gt=0, description="KV capacity in blocks (with hardware: "
                                "from memory unless given)")
    kv_blocks_source: Literal["explicit", "memory", "default"] = Field(
        "explicit", description="where num_gpu_blocks came from (set by validation)")
    max_num_seqs: int = Field(256, gt=0, description="cap on running requests")
    max_num_batched_tokens: int = Field(8192, gt=0, description="token budget of one pass")
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    preemption_mode: Literal["lifo", "fifo"] = "lifo"
    speedup_ratio: float = Field(1.0, gt=0)
    decode_speedup_ratio: float = Field(1.0, gt=0)
    timing: str = Field("polynomial", description="timing model name (aic, roofline, polynomial, interpolated, "
                                                  "fixed); with hardware: aic unless given")
    timing_profile: str | None = Field(None, description="profile file or bundled name for table models")
    timing_params: dict[str, float | list[float]] = Field(
        default_factory=dict, description="model parameters, e.g. fixed: prefill_ms, decode_ms; "
                                          "polynomial: prefill_coeffs, decode_coeffs ([a, b, c])")
    hardware: HardwareSpec | None = Field(None, description="model × GPU system × engine × parallelism: sizes the "
                                          "KV cache and prices passes")
    gpus_per_worker: int = Field(1, gt=0, description="GPUs one worker occupies (TP × PP × DP; with hardware: "
                                                      "derived)")
    nextn: int = Field(0, ge=0, le=MAX_NEXTN, description="speculative decoding: draft tokens per decode pass "
                                                          "(MTP / next-n; Dynamo's aic_nextn)")
    nextn_accept_rates: list[float] | None = Field(None, description="per draft position, P(accepted | earlier "
                                                   "ones accepted); default 0.85, 0.3, 0, … (Dynamo's)")
    mtp_seed: int = Field(42, ge=0, description="seed of the acceptance draws (worker w draws from seed + w)")
    admit_interval_ms: float = Field(0.0, ge=0, allow_inf_nan=False,
                                     description="requests reach the engine at least this far apart (a real "
                                                 "server handles requests one by one); 0: all at once, as "
                                                 "Dynamo's mocker")
    client_latency_ms: float = Field(0.0, ge=0, allow_inf_nan=False,
                                     description="fixed delay from the engine producing a token to the client "
                                                 "seeing it (request and output handling): shifts TTFT and E2E, "
                                                 "not ITL or pass times; 0: Dynamo's mocker")

    @model_validator(mode="before")
    @classmethod
    def _derive_from_hardware(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        d = dict(data)
        hw = d.get("hardware")
        if isinstance(hw, dict):
            hw = HardwareSpec.model_validate(hw)
            d["hardware"] = hw
        given = d.get("num_gpu_blocks") is not None and d.get("kv_blocks_source", "explicit") == "explicit"
        if given:
            d["kv_blocks_source"] = "explicit"
        elif isinstance(hw, HardwareSpec):
            from dynosim.hardware.memory import worker_memory

            mem = worker_memory(hw, int(d.get("block_size", 64)), int(d.get("max_num_batched_tokens", 8192)),
                                int(d.get("max_num_seqs", 256)))
            d["num_gpu_blocks"], d["kv_blocks_source"] = mem.kv_blocks_per_worker, "memory"
        else:
            d["num_gpu_blocks"], d["kv_blocks_source"] = DEFAULT_NUM_GPU_BLOCKS, "default"
        if isinstance(hw, HardwareSpec):
            d["gpus_per_worker"] = hw.gpus
            if d.get("timing") is None:
                d["timing"] = "aic"
        elif d.get("timing") is None:
            d["timing"] = "polynomial"
        return d

    @model_validator(mode="after")
    def _check(self) -> "MockerArgs":
        from dynosim.engines.mocker.registry import scheduler_class

        scheduler_class(self.engine_type)
        if self.max_num_seqs > self.max_num_batched_tokens:
            raise ValueError(
                f"max_num_seqs ({self.max_num_seqs}) exceeds max_num_batched_tokens "
                f"({self.max_num_batched_tokens}): a full decode batch could never be scheduled")
        if self.timing in ("aic", "roofline") and self.hardware is None:
            raise ValueError(f"timing {self.timing!r} prices passes for a named model and GPU: give a hardware "
                             "section (--model and --system)")
        if self.nextn_accept_rates is not None:
            if not self.nextn:
                raise ValueError("nextn_accept_rates needs nextn >= 1 (speculative decoding off)")
            for i, r in enumerate(self.nextn_accept_rates):
                if not 0.0 <= r <= 1.0:
                    raise ValueError(f"nextn_accept_rates[{i}] = {r} is not a probability in [0, 1]")
        return self

    @property
    def accept_rates(self) -> tuple[float, ...]:
        """Per-position conditional acceptance, padded with 0 or cut to ``nextn`` (as Dynamo)."""
        rates = tuple(self.nextn_accept_rates) if self.nextn_accept_rates is not None \
            else DEFAULT_ACCEPT_RATES
        return (rates + (0.0,) * self.nextn)[: self.nextn]
