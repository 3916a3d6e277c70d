"""KV-cache transfer time from a prefill worker to a decode worker.

``delay = tokens × kv_bytes_per_token / bandwidth + latency``, as Dynamo's
mocker computes it (its latency is 0). ``kv_bytes_per_token`` comes from the
model's shape: every layer stores a key and a value vector per KV head, so
``layers × 2 × kv_heads × head_dim × dtype_bytes`` (Llama-3.1-8B in bf16:
32 · 2 · 8 · 128 · 2 = 131,072 B).

Link presets are nominal figures, per direction, for a first answer; pass
your own bandwidth and latency for anything you have measured:

- ``nvlink``: NVLink 4 within a node, 450 GB/s, 0.005 ms;
- ``rdma``: NIXL over UCX on a 400 Gb/s InfiniBand / RoCE NIC, 50 GB/s, 0.02 ms;
- ``tcp``: NIXL's TCP fallback on a 25 Gb/s NIC, 3.125 GB/s, 0.1 ms.

With ``contention`` on, transfers that use the same link queue behind each
other (first come, first served), so a burst of hand-offs sees the link's
bandwidth once, not once per transfer. No simpy here: the simulator calls
``LinkState.schedule(now, tokens)`` and gets the time the KV lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp8": 1, "int8": 1}


class ModelKVShape(BaseModel):
    """What a model's KV cache looks like, per token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    dtype: str = Field("bf16", description="KV cache dtype: " + ", ".join(sorted(DTYPE_BYTES)))

    @model_validator(mode="after")
    def _known_dtype(self) -> "ModelKVShape":
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown KV dtype {self.dtype!r}; choose from {sorted(DTYPE_BYTES)}")
        return self

    @property
    def bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * DTYPE_BYTES[self.dtype]


MODEL_PRESETS: dict[str, ModelKVShape] = {
    "llama-3.1-8b": ModelKVShape(layers=32, kv_heads=8, head_dim=128),
    "llama-3.1-70b": ModelKVShape(layers=80, kv_heads=8, head_dim=128),
    "llama-3.1-405b": ModelKVShape(layers=126, kv_heads=8, head_dim=128),
    "qwen2.5-7b": ModelKVShape(layers=28, kv_heads=4, head_dim=128),
    "qwen3-32b": ModelKVShape(layers=64, kv_heads=8, head_dim=128),
}


@dataclass(frozen=True)
class Link:
    bandwidth_gbps: float   # GB/s (1e9 bytes per second), one direction
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.bandwidth_gbps > 0:
            raise ValueError(f"link bandwidth must be > 0 GB/s, got {self.bandwidth_gbps}")
        if not self.latency_ms >= 0:
            raise ValueError(f"link latency must be >= 0 ms, got {self.latency_ms}")


LINK_PRESETS: dict[str, Link] = {
    "nvlink": Link(450.0, 0.005),
    "rdma": Link(50.0, 0.02),
    "tcp": Link(3.125, 0.1),
}


def transfer_ms(tokens: int, bytes_per_token: int, link: Link) -> float:
    """Time to move ``tokens`` tokens of KV over an idle ``link``."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    return tokens * bytes_per_token / (link.bandwidth_gbps * 1e9) * 1000.0 + link.latency_ms


class TransferConfig(BaseModel):
    """How prefill workers hand KV to decode workers (validated at the edge)."""

    model_config = ConfigDict(extra="forbid")

    model: str | ModelKVShape = Field("llama-3.1-8b", description="preset name or KV shape")
    link: str | None = Field("rdma", description="preset: nvlink, rdma, tcp (None: give bandwidth_gbps)")
    bandwidth_gbps: float | None = Field(None, gt=0, description="overrides the preset's bandwidth")
    latency_ms: float | None = Field(None, ge=0, description="overrides the preset's latency")
    contention: bool = Field(False, description="transfers on one link queue behind each other")

    @model_validator(mode="after")
    def _resolve(self) -> "TransferConfig":
        if isinstance(self.model, str) and self.model not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {self.model!r}; choose from {sorted(MODEL_PRESETS)} "
                             "or give layers/kv_heads/head_dim/dtype")
        if self.link is None and self.bandwidth_gbps is None:
            raise ValueError("give a link preset or bandwidth_gbps")
        if self.link is not None and self.link not in LINK_PRESETS:
            raise ValueError(f"unknown link preset {self.link!r}; choose from {sorted(LINK_PRESETS)}")
        return self

    @property
    def shape(self) -> ModelKVShape:
        return MODEL_PRESETS[self.model] if isinstance(self.model, str) else self.model

    @property
    def resolved_link(self) -> Link:
        base = LINK_PRESETS[self.link] if self.link is not None else Link(self.bandwidth_gbps or 1.0, 0.0)
        return Link(self.bandwidth_gbps if self.bandwidth_gbps is not None else base.bandwidth_gbps,
                    self.latency_ms if self.latency_ms is not None else base.latency_ms)

    def delay_ms(self, tokens: int) -> float:
        return transfer_ms(tokens, self.shape.bytes_per_token, self.resolved_link)


class LinkState:
    """One link's queue when transfers contend for it (FIFO); without contention every transfer is alone."""

    def __init__(self, cfg: TransferConfig):
        self.cfg = cfg
        self._free_at = float("-inf")
        self.transfers = 0
        self.bytes = 0
        self.busy_ms = 0.0

    def schedule(self, now: float, tokens: int) -> float:
        """Time at which ``tokens`` tokens of KV, ready at ``now``, have arrived."""
        d = self.cfg.delay_ms(tokens)
        start = max(now, self._free_at) if self.cfg.contention else now
        end = start + d
        if self.cfg.contention:
            self._free_at = end
        self.transfers += 1
        self.bytes += tokens * self.cfg.shape.bytes_per_token
        self.busy_ms += d
        return end
