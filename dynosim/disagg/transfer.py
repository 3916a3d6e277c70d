"""KV-cache transfer time from a prefill worker to a decode worker.

``delay = tokens × kv_bytes_per_token / bandwidth + latency``, as Dynamo's
mocker computes it (its latency is 0). ``kv_bytes_per_token`` comes from the
model's shape: with a hardware section, the prefill pool's model in its KV
dtype (``dynosim.hardware``: GQA heads or the MLA latent, all layers);
otherwise ``transfer.model`` (layers × 2 × kv_heads × head_dim × dtype bytes),
by default Llama-3.1-8B in bf16 (32 · 2 · 8 · 128 · 2 = 131,072 B).

The link, unless named (``link`` preset or ``bandwidth_gbps``): with hardware,
from the systems' own figures: NVLink (``intra_node_bw``) when every GPU of the
deployment fits in one node, else RDMA (``inter_node_bw``, one NIC per GPU);
each GPU of the smaller worker moves its shard over its own link, so the
bandwidth is per-GPU bandwidth × that worker's GPUs. Without hardware: ``rdma``.

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
    """What a model's KV cache looks like, per token (for a model without a hardware section)."""

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


# Llama-3.1-8B in bf16: the hand-off's shape when no model is named
DEFAULT_KV_SHAPE = ModelKVShape(layers=32, kv_heads=8, head_dim=128)


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


def transfer_ms(tokens: int, bytes_per_token: float, link: Link) -> float:
    """Time to move ``tokens`` tokens of KV over an idle ``link``."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    return tokens * bytes_per_token / (link.bandwidth_gbps * 1e9) * 1000.0 + link.latency_ms


@dataclass(frozen=True)
class Handoff:
    """A resolved hand-off: what one token weighs and the link it crosses."""

    bytes_per_token: float
    link: Link
    contention: bool
    source: str          # how the link was chosen (preset name, "given", "nvlink (h200_sxm)", ...)

    def delay_ms(self, tokens: int) -> float:
        return transfer_ms(tokens, self.bytes_per_token, self.link)


class TransferConfig(BaseModel):
    """How prefill workers hand KV to decode workers (validated at the edge)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelKVShape | None = Field(None, description="KV shape (None: the prefill pool's hardware model, "
                                       "else Llama-3.1-8B bf16)")
    link: str | None = Field(None, description="preset: nvlink, rdma, tcp (None: from the systems with hardware, "
                             "else rdma)")
    bandwidth_gbps: float | None = Field(None, gt=0, description="overrides the link's bandwidth")
    latency_ms: float | None = Field(None, ge=0, description="overrides the link's latency")
    contention: bool = Field(False, description="transfers on one link queue behind each other")

    @model_validator(mode="after")
    def _check(self) -> "TransferConfig":
        if self.link is not None and self.link not in LINK_PRESETS:
            raise ValueError(f"unknown link preset {self.link!r}; choose from {sorted(LINK_PRESETS)}")
        return self

    def resolve(self, prefill_hw=None, decode_hw=None, total_gpus: int = 0) -> Handoff:
        """The hand-off for pools on ``prefill_hw`` / ``decode_hw`` (``HardwareSpec`` or None)."""
        if self.model is not None:
            bpt: float = self.model.bytes_per_token
        elif prefill_hw is not None:
            bpt = prefill_hw.shape.kv_bytes_per_token(prefill_hw.kv_dtype)
        else:
            bpt = DEFAULT_KV_SHAPE.bytes_per_token
        if self.link is not None:
            base, source = LINK_PRESETS[self.link], self.link
        elif prefill_hw is not None and decode_hw is not None:
            base, source = _system_link(prefill_hw, decode_hw, total_gpus)
        else:
            base, source = LINK_PRESETS["rdma"], "rdma"
        if self.bandwidth_gbps is not None or self.latency_ms is not None:
            source = f"{source}, given " + ", ".join(
                x for x, v in (("bandwidth", self.bandwidth_gbps), ("latency", self.latency_ms)) if v is not None)
        link = Link(self.bandwidth_gbps if self.bandwidth_gbps is not None else base.bandwidth_gbps,
                    self.latency_ms if self.latency_ms is not None else base.latency_ms)
        return Handoff(bpt, link, self.contention, source)


def _system_link(pre, dec, total_gpus: int) -> tuple[Link, str]:
    from dynosim.hardware.catalog import system_spec

    sp, sd = system_spec(pre.system), system_spec(dec.system)
    lanes = min(pre.gpus, dec.gpus)
    if pre.system == dec.system and 0 < total_gpus <= sp.gpus_per_node and sp.intra_node_bw > 0:
        return Link(sp.intra_node_bw * lanes / 1e9, LINK_PRESETS["nvlink"].latency_ms), \
            f"nvlink ({pre.system}, one node, {lanes} GPU lane(s))"
    bw = min(sp.inter_node_bw or 50e9, sd.inter_node_bw or 50e9)
    return Link(bw * lanes / 1e9, LINK_PRESETS["rdma"].latency_ms), f"rdma ({pre.system}→{dec.system}, " \
        f"{lanes} NIC(s))"


class LinkState:
    """One link's queue when transfers contend for it (FIFO); without contention every transfer is alone."""

    def __init__(self, handoff: Handoff):
        self.cfg = handoff
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
        self.bytes += tokens * self.cfg.bytes_per_token
        self.busy_ms += d
        return end
