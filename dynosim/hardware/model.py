"""A model's shape from its Hugging Face config: what memory and pricing need.

Covers dense GQA models (Llama, Qwen, Mistral), Mixtral- and Qwen-style MoE,
and DeepSeek-style MLA + MoE. Parameter counts are per component, so the
memory model can shard each by the parallelism that splits it (attention by
TP, experts by TP × DP over EP, layers by PP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynosim.hardware.catalog import HardwareError, ModelSource

# bytes per stored element; nvfp4 keeps one fp8 scale per 16 four-bit values
DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "int8": 1.0,
                                 "nvfp4": 9 / 16, "int4": 0.5}
# what the database calls each weight / KV dtype
AIC_WEIGHT_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8", "int8": "int8", "nvfp4": "nvfp4",
                    "int4": "int4", "fp32": None}
AIC_KV_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8", "int8": "int8"}
KV_DTYPES = ("bf16", "fp16", "fp8", "int8", "fp32")


@dataclass(frozen=True)
class ModelShape:
    name: str
    architecture: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tie_embeddings: bool
    # mixture of experts (0 experts: dense)
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0     # summed width of the always-on shared experts per MoE layer
    dense_layers: int = 0            # leading layers with a dense MLP in an MoE model
    # multi-head latent attention (DeepSeek): the cache holds one latent + rope key per token and layer
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    native_weight_dtype: str = "bf16"
    native_kv_dtype: str = "bf16"
    block_fp8: bool = False          # the checkpoint's fp8 weights are block-scaled (DeepSeek, Qwen3 FP8)
    max_context: int = 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    # -- parameters ---------------------------------------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        h = self.hidden
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = h * self.q_lora_rank + self.q_lora_rank * self.heads * qk if self.q_lora_rank else h * self.heads * qk
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * self.heads * (
                self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + self.heads * self.v_head_dim * h
        return h * self.heads * self.head_dim * 2 + h * self.kv_heads * self.head_dim * 2

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def expert_params(self) -> int:
        """Routed experts of all layers (what expert parallelism shards)."""
        return self.moe_layers * self.num_experts * 3 * self.hidden * self.moe_intermediate

    @property
    def dense_params(self) -> int:
        """Everything but the routed experts and the embeddings: attention, dense and shared MLPs, routers."""
        h = self.hidden
        mlp_dense = (self.layers - self.moe_layers) * 3 * h * self.intermediate
        shared = self.moe_layers * (3 * h * self.shared_intermediate + h * self.num_experts)
        return self.layers * self.attention_params_per_layer + mlp_dense + shared

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tie_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.dense_params + self.expert_params + self.embedding_params

    @property
    def active_params(self) -> int:
        """Parameters one token touches (the roofline's FLOPs are 2 × this)."""
        routed = self.moe_layers * self.experts_per_token * 3 * self.hidden * self.moe_intermediate
        return self.dense_params + routed + self.vocab * self.hidden

    # -- KV cache ------------------------------------------------------------------------------------------------
    def kv_elements_per_token_per_layer(self, tp: int = 1) -> int:
        """Cached elements of one token in one layer on one GPU of a TP group.

        GQA splits the KV heads over TP (a GPU keeps at least one head: beyond TP = kv_heads heads are
        replicated); MLA's latent is not split by TP, every rank holds it whole.
        """
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        heads = max(1, -(-self.kv_heads // tp))
        return 2 * heads * self.head_dim

    def kv_bytes_per_token(self, kv_dtype: str, tp: int = 1, pp: int = 1) -> float:
        """KV bytes of one token on one GPU (TP shard of the heads, PP stage's layers); tp=pp=1: the whole model."""
        layers = -(-self.layers // pp)
        return layers * self.kv_elements_per_token_per_layer(tp) * DTYPE_BYTES[kv_dtype]


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _native_dtypes(cfg: dict[str, Any], quant: dict[str, Any] | None) -> tuple[str, str]:
    """The checkpoint's weight and KV dtypes; KV follows the engine default (the model dtype) unless the
    checkpoint's quantization names an fp8 KV cache."""
    w, kv = "bf16", "bf16"
    if str(cfg.get("torch_dtype", "bfloat16")) in ("float16", "fp16"):
        w = kv = "fp16"
    qc = cfg.get("quantization_config") or {}
    method = str(qc.get("quant_method", "")).lower()
    algo = str(((quant or {}).get("quantization") or {}).get("quant_algo") or qc.get("quant_algo") or "").upper()
    if method == "fp8" or algo.startswith("FP8"):
        w = "fp8"
    elif "NVFP4" in algo or method in ("nvfp4", "modelopt_fp4"):
        w = "nvfp4"
    kv_algo = str(((quant or {}).get("quantization") or {}).get("kv_cache_quant_algo") or
                  qc.get("kv_cache_quant_algo") or "").upper()
    if kv_algo.startswith("FP8"):
        kv = "fp8"
    return w, kv


def model_shape(src: ModelSource) -> ModelShape:
    """The shape of ``src``'s model; a config without the fields a decoder needs is an error naming them."""
    cfg = src.config
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else None
    if text and "num_hidden_layers" not in cfg:
        cfg = {**cfg, **text}
    need = {"num_hidden_layers": "layers", "hidden_size": "hidden size", "num_attention_heads": "attention heads",
            "vocab_size": "vocabulary"}
    missing = [k for k in need if cfg.get(k) is None]
    if missing:
        raise HardwareError(f"model config {src.name}: missing {', '.join(missing)}")
    arch = (cfg.get("architectures") or ["unknown"])[0]
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    head_dim = int(_get(cfg, "head_dim", default=hidden // heads))
    num_experts = int(_get(cfg, "n_routed_experts", "num_experts", "num_local_experts", default=0) or 0)
    inter = int(_get(cfg, "intermediate_size", default=4 * hidden))
    moe_inter = int(_get(cfg, "moe_intermediate_size", default=inter)) if num_experts else 0
    shared = 0
    if num_experts:
        if cfg.get("n_shared_experts"):
            shared = int(cfg["n_shared_experts"]) * moe_inter
        elif cfg.get("shared_expert_intermediate_size"):
            shared = int(cfg["shared_expert_intermediate_size"])
    w, kv = _native_dtypes(cfg, src.quant)
    block = w == "fp8" and bool((cfg.get("quantization_config") or {}).get("weight_block_size"))
    return ModelShape(
        name=src.name, architecture=arch, layers=int(cfg["num_hidden_layers"]), hidden=hidden, heads=heads,
        kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)), head_dim=head_dim, intermediate=inter,
        vocab=int(cfg["vocab_size"]), tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        num_experts=num_experts, experts_per_token=int(_get(cfg, "num_experts_per_tok", default=0) or 0),
        moe_intermediate=moe_inter, shared_intermediate=shared,
        dense_layers=int(cfg.get("first_k_dense_replace", 0) or 0) if num_experts else 0,
        kv_lora_rank=int(cfg.get("kv_lora_rank") or 0), q_lora_rank=int(cfg.get("q_lora_rank") or 0),
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0), qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0),
        v_head_dim=int(cfg.get("v_head_dim") or 0), native_weight_dtype=w, native_kv_dtype=kv, block_fp8=block,
        max_context=int(_get(cfg, "max_position_embeddings", default=0) or 0))
