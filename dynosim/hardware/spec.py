"""The hardware section of an engine: which model, on which GPUs, served by which engine, split how.

Validated at the edge: names are resolved against the database's catalogue
(cheap: no performance data is loaded) and parallelism is checked against the
model, so a bad combination fails before any simulation starts.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.hardware.catalog import HardwareError, resolve_backend, resolve_model, system_spec
from dynosim.hardware.model import DTYPE_BYTES, KV_DTYPES, ModelShape, model_shape

WEIGHT_DTYPES = ("bf16", "fp16", "fp8", "int8", "nvfp4", "int4")


@lru_cache(maxsize=None)
def _shape_of(model: str) -> ModelShape:
    return model_shape(resolve_model(model))


class HardwareSpec(BaseModel):
    """One worker: a model on ``tp × pp × dp`` GPUs of a system, served by an engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="database model id (e.g. meta-llama/Meta-Llama-3.1-70B) or a path to a "
                                   "Hugging Face config.json")
    system: str = Field(description="GPU system (h100_sxm, h200_sxm, b200_sxm, ...)")
    backend: Literal["vllm", "sglang", "trtllm"] = Field("vllm", description="serving engine")
    backend_version: str | None = Field(None, description="engine version in the database (None: its current; "
                                                          "aliases current, previous, next)")
    tp: int = Field(1, gt=0, description="tensor parallel GPUs")
    pp: int = Field(1, gt=0, description="pipeline parallel stages")
    ep: int = Field(1, gt=0, description="MoE: expert parallel ranks (experts split over ep, each over "
                                         "tp × dp / ep GPUs)")
    dp: int = Field(1, gt=0, description="MoE: attention data-parallel ranks (each its own KV cache)")
    weight_quant: str | None = Field(None, description="weights: " + ", ".join(WEIGHT_DTYPES)
                                     + " (None: the model's own)")
    kv_quant: str | None = Field(None, description="KV cache: " + ", ".join(k for k in KV_DTYPES if k != "fp32")
                                 + " (None: the model's own)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of each GPU's memory the engine "
                                                                       "takes (weights + reserve + KV)")

    @model_validator(mode="after")
    def _check(self) -> "HardwareSpec":
        shape = self.shape  # resolves the model (error names the nearest ids)
        system_spec(self.system)
        if self.weight_quant is not None and self.weight_quant not in WEIGHT_DTYPES:
            raise HardwareError(f"weight quantization {self.weight_quant!r}: choose from {', '.join(WEIGHT_DTYPES)}")
        if self.kv_quant is not None and self.kv_quant not in DTYPE_BYTES:
            raise HardwareError(f"KV quantization {self.kv_quant!r}: choose from {', '.join(KV_DTYPES)}")
        if self.weights_dtype == "nvfp4" and "fp4" not in system_spec(self.system).flops:
            raise HardwareError(f"nvfp4 weights need a Blackwell system; {self.system} has no FP4 tensor cores")
        if self.weights_dtype == "fp8" and "fp8" not in system_spec(self.system).flops:
            raise HardwareError(f"fp8 weights need FP8 tensor cores; {self.system} has none (use bf16 or int8)")
        if not shape.is_moe and (self.ep > 1 or self.dp > 1):
            raise HardwareError(f"--ep and --dp apply to MoE models; {self.model} is dense (use more workers "
                                "instead of attention data parallelism)")
        if (self.tp * self.dp) % self.ep:
            raise HardwareError(f"ep={self.ep} must divide tp × dp = {self.tp * self.dp} (the MoE layers run on the "
                                "same GPUs as attention)")
        if shape.is_moe and shape.num_experts % self.ep:
            raise HardwareError(f"ep={self.ep} does not divide the model's {shape.num_experts} experts")
        if self.pp > shape.layers:
            raise HardwareError(f"pp={self.pp} exceeds the model's {shape.layers} layers")
        return self

    @property
    def shape(self) -> ModelShape:
        return _shape_of(self.model)

    @property
    def gpus(self) -> int:
        """GPUs of one worker: TP × PP × attention-DP."""
        return self.tp * self.pp * self.dp

    @property
    def moe_tp(self) -> int:
        return self.tp * self.dp // self.ep

    @property
    def weights_dtype(self) -> str:
        return self.weight_quant or self.shape.native_weight_dtype

    @property
    def kv_dtype(self) -> str:
        return self.kv_quant or self.shape.native_kv_dtype

    def version(self) -> str:
        """The concrete database version (raises ``HardwareError`` when the database lacks the pair)."""
        return resolve_backend(self.system, self.backend, self.backend_version)

    def label(self) -> str:
        par = f"TP{self.tp}" + (f"PP{self.pp}" if self.pp > 1 else "") + (f"DP{self.dp}" if self.dp > 1 else "") \
            + (f"EP{self.ep}" if self.ep > 1 else "")
        return f"{self.model} on {self.system} {par} ({self.backend})"
