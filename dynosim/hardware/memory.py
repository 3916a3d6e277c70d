"""How much KV cache one worker holds: HBM × utilisation − weights − reserve, over KV bytes per token.

Per GPU of a worker (all GPUs of a worker hold the same share):

- weights: dense parts (attention, dense and shared MLPs) split over TP, routed experts over
  TP × DP (EP × MoE-TP), embeddings and LM head (kept in bf16) over TP; everything over PP.
  With attention data parallelism each DP rank holds the attention weights whole for its TP group.
- reserve: the system's runtime allowance (``misc.other_mem`` in the database's system file:
  CUDA context, allocator slack), its NCCL buffers for the TP size, and the activations of the
  largest pass (``max_num_batched_tokens`` × (4 × hidden + 2 × intermediate / TP) bf16 values)
  plus the logits of a full batch (``max_num_seqs`` × vocab fp32).
- KV bytes per token per GPU: the TP shard of the KV heads (GQA; at least one head per GPU) or the
  whole MLA latent (not split by TP), for the PP stage's layers, in the KV dtype.

A worker with attention DP has ``dp`` caches; the simulated engine pools them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dynosim.hardware.catalog import HardwareError, system_spec
from dynosim.hardware.model import DTYPE_BYTES
from dynosim.hardware.spec import HardwareSpec

GB = 1e9


@dataclass(frozen=True)
class WorkerMemory:
    gpus_per_worker: int
    hbm_gb_per_gpu: float
    usable_gb_per_gpu: float         # HBM × utilisation
    weights_gb_per_gpu: float
    reserve_gb_per_gpu: float
    kv_gb_per_gpu: float
    kv_bytes_per_token: float        # the whole model's KV of one token (what a hand-off moves)
    kv_bytes_per_token_per_gpu: float
    kv_tokens_per_worker: int
    kv_blocks_per_worker: int
    block_size: int

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def weights_bytes_per_gpu(hw: HardwareSpec) -> float:
    s = hw.shape
    wb = DTYPE_BYTES[hw.weights_dtype]
    dense = s.dense_params * wb / hw.tp
    experts = s.expert_params * wb / (hw.tp * hw.dp) if s.is_moe else 0.0
    embed = s.embedding_params * DTYPE_BYTES["bf16"] / hw.tp
    return (dense + experts + embed) / hw.pp


def reserve_bytes_per_gpu(hw: HardwareSpec, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    s = hw.shape
    sysp = system_spec(hw.system)
    inter = s.moe_intermediate * max(1, s.experts_per_token) if s.is_moe else s.intermediate
    act = max_num_batched_tokens * (4 * s.hidden + 2 * inter / hw.tp) * 2
    logits = max_num_seqs * s.vocab * 4 / hw.tp
    return sysp.other_mem + sysp.nccl_bytes(hw.tp) + act + logits


def worker_memory(hw: HardwareSpec, block_size: int, max_num_batched_tokens: int = 8192,
                  max_num_seqs: int = 256) -> WorkerMemory:
    """The worker's memory budget; a model that leaves no room for KV is an error with the numbers."""
    sysp = system_spec(hw.system)
    usable = sysp.hbm_bytes * hw.gpu_memory_utilization
    weights = weights_bytes_per_gpu(hw)
    reserve = reserve_bytes_per_gpu(hw, max_num_batched_tokens, max_num_seqs)
    kv = usable - weights - reserve
    per_tok_gpu = hw.shape.kv_bytes_per_token(hw.kv_dtype, hw.tp, hw.pp)
    tokens = int(kv // per_tok_gpu) * hw.dp if kv > 0 else 0
    blocks = tokens // block_size
    if blocks < 1:
        par = f"TP{hw.tp}" + (f" PP{hw.pp}" if hw.pp > 1 else "") + (f" EP{hw.ep}" if hw.ep > 1 else "")
        raise HardwareError(
            f"{hw.model} does not fit on {hw.system} at {par}: weights need {weights / GB:.1f} GB per GPU and the "
            f"reserve {reserve / GB:.1f} GB, but {sysp.hbm_bytes / GB:.1f} GB HBM × {hw.gpu_memory_utilization} "
            f"utilisation gives {usable / GB:.1f} GB, leaving no KV cache; raise --tp/--pp, quantize the weights "
            "(--weight-quant fp8) or use a larger GPU")
    return WorkerMemory(
        gpus_per_worker=hw.gpus, hbm_gb_per_gpu=sysp.hbm_bytes / GB, usable_gb_per_gpu=usable / GB,
        weights_gb_per_gpu=weights / GB, reserve_gb_per_gpu=reserve / GB, kv_gb_per_gpu=kv / GB,
        kv_bytes_per_token=hw.shape.kv_bytes_per_token(hw.kv_dtype), kv_bytes_per_token_per_gpu=per_tok_gpu,
        kv_tokens_per_worker=tokens, kv_blocks_per_worker=blocks, block_size=block_size)
