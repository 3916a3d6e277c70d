"""An uncalibrated roofline price of a pass (``--timing roofline``), for pairs the measured database lacks.

Same interface as ``AicTiming``: one iteration is priced whole from its shape
(``n_prefill`` requests prefilling ``prefill_tokens`` new tokens, ``n_decode``
requests decoding ``1 + nextn`` tokens each over ``decode_kv`` context tokens).
Everything is per GPU of the worker (TP × PP × DP GPUs):

- **Batch split.** With attention data parallelism the batch is split evenly
  over the ``dp`` ranks (fractional shares; every rank costs the same).
- **Pipeline.** One microbatch goes through the stages one after another, so
  the pass costs the sum over stages = the per-stage time × ``pp``: PP divides
  no time, it only adds one activation hand-off per stage boundary. (No
  microbatch overlap, no bubbles; deliberately simple.)
- **Compute.** ``2 × (active_params − vocab × hidden) × tokens`` for the
  linear layers, plus the LM head ``2 × vocab × hidden`` only for the tokens
  that produce logits (the last of each prefill, every verified decode token),
  plus attention: prefill ``2 × layers × heads × (d_qk + d_v) × tokens ×
  isl / 2`` (causal; ``isl`` = the mean new tokens per request: a pass does
  not know cached prefixes), decode ``2 × layers × heads × (d_qk + d_v) ×
  decode_kv × (1 + nextn)``; with ``d_qk = d_v = head_dim`` that is
  ``4 × layers × heads × head_dim × …``. MLA uses its real widths (prefill:
  nope+rope / v; decode, absorbed: latent+rope / latent). All over TP, divided
  by the peak tensor FLOP/s of the weights' dtype (fp8 → ``fp8``, nvfp4 →
  ``fp4``, else ``bfloat16``) × ``MFU``.
- **Memory.** The GPU's weight shard (``memory.weights_bytes_per_gpu``) read
  once per pass, for MoE only the experts hit: ``min(E, tokens × top_k)`` of
  ``E`` per layer (tokens of the whole worker), plus the KV read by decode
  (``decode_kv × KV bytes per token per GPU``) and the KV written for every
  new token, over ``mem_bw × MEM_BW_EFFICIENCY``.
- **Communication.** Two all-reduces per layer of ``tokens × hidden × 2``
  bytes (ring: × ``2 (g − 1) / g``) over NVLink (``intra_node_bw``; the NIC
  when the group spans nodes) plus ``ALLREDUCE_LATENCY_S`` each. The group is
  TP, except the collective after an MoE block, which spans the MoE group
  (TP × DP); expert-parallel all-to-all is not modelled separately.
- **Pass** = ``max(compute, memory) + communication + PASS_OVERHEAD_MS``
  (kernel launches, sampling, scheduling).

Calibration: the constants were checked against the database for
Llama-3.1-8B on h200_sxm TP1 and Llama-3.1-70B on h100_sxm TP4 (vLLM):
prefills of 1k-8k tokens and decodes of batch 1-128 at 8k context land
within 0.98-1.21x of the measured prices. ``MFU = 0.6`` because the
database's large bf16 GEMMs reach ~70 % of the datasheet peak and 0.55 priced
every prefill 10-30 % high (0.7 fits plain prefills best but prices mixed
passes ~13 % low, since ``max(compute, memory)`` assumes perfect overlap);
``PASS_OVERHEAD_MS = 1.0`` because the database's batch-1, 1-token-context
decode sits ~1 ms above the pure weight read (2 ms priced small decodes
~25 % high). ``MEM_BW_EFFICIENCY = 0.8`` as the database's own bandwidth
scaling. For any other pair the numbers are uncalibrated: use the database
(``--timing aic``) where it has data.
"""

from __future__ import annotations

import numpy as np

from dynosim.hardware.catalog import system_spec
from dynosim.hardware.memory import weights_bytes_per_gpu
from dynosim.hardware.model import DTYPE_BYTES
from dynosim.hardware.spec import HardwareSpec

MFU = 0.6                      # achieved share of the peak tensor FLOP/s (GEMMs and attention alike)
MEM_BW_EFFICIENCY = 0.8        # achieved share of the HBM bandwidth (cf. mem_bw_empirical_scaling_factor)
ALLREDUCE_LATENCY_S = 10e-6    # fixed cost of one collective (and of one pipeline hand-off)
PASS_OVERHEAD_MS = 1.0         # per pass: launches, sampling, scheduling
ACT_BYTES = 2                  # activations on the wire are bf16

# the tensor-core dtype each weight dtype computes in (the rest: bfloat16)
COMPUTE_DTYPE = {"fp8": "fp8", "nvfp4": "fp4"}


class RooflineTiming:
    """Roofline timing for one worker (``whole_pass``: the scheduler prices whole passes)."""

    name = "roofline"
    whole_pass = True
    pass_overhead_ms = 0.0

    def __init__(self, hw: HardwareSpec, nextn: int = 0):
        self.hw = hw
        self.nextn = int(nextn)
        self.dp = hw.dp
        self.source = "roofline (uncalibrated)"
        s = hw.shape
        sysp = system_spec(hw.system)
        self.shape = s
        self.system = sysp
        key = COMPUTE_DTYPE.get(hw.weights_dtype, "bfloat16")
        self.peak_flops = sysp.flops.get(key) or sysp.flops["bfloat16"]
        stage_layers = -(-s.layers // hw.pp)
        # the stages run one after another: a ragged last stage still costs a full stage
        self._pp_factor = hw.pp * stage_layers / s.layers
        # linear FLOPs per token besides the LM head, and the LM head per logit
        self._lm_head = s.vocab * s.hidden
        self._body_params = s.active_params - self._lm_head
        if s.is_mla:
            pre = s.qk_nope_head_dim + s.qk_rope_head_dim + s.v_head_dim
            dec = 2 * s.kv_lora_rank + s.qk_rope_head_dim
        else:
            pre = dec = 2 * s.head_dim
        self._attn_pre = 2 * s.layers * s.heads * pre      # FLOPs per (query token × context token)
        self._attn_dec = 2 * s.layers * s.heads * dec
        # bytes read per pass: all weights of this GPU (× pp stages), experts separately for MoE
        wb = DTYPE_BYTES[hw.weights_dtype]
        self._expert_bytes = s.expert_params * wb / (hw.tp * hw.dp) if s.is_moe else 0.0
        self._weight_bytes = weights_bytes_per_gpu(hw) * hw.pp
        self._kv_bytes = s.kv_bytes_per_token(hw.kv_dtype, hw.tp, hw.pp) * hw.pp
        self._mem_bw = sysp.mem_bw * MEM_BW_EFFICIENCY
        self._flops = self.peak_flops * MFU

    # -- the model ---------------------------------------------------------------------------------------------
    def _bw(self, gpus: int) -> float:
        return self.system.intra_node_bw if gpus <= self.system.gpus_per_node else self.system.inter_node_bw

    def _allreduce_s(self, group: int, nbytes: float) -> float:
        if group <= 1:
            return 0.0
        return nbytes * 2 * (group - 1) / group / self._bw(group) + ALLREDUCE_LATENCY_S

    def _comm_s(self, tokens: float) -> float:
        """Collectives of one pass for ``tokens`` tokens per DP rank."""
        s, hw = self.shape, self.hw
        nbytes = tokens * s.hidden * ACT_BYTES
        tp_ar = self._allreduce_s(hw.tp, nbytes)
        moe_ar = self._allreduce_s(hw.tp * hw.dp, nbytes)
        t = s.layers * tp_ar + (s.layers - s.moe_layers) * tp_ar + s.moe_layers * moe_ar
        if hw.pp > 1:
            t += (hw.pp - 1) * (nbytes / self._bw(hw.tp * hw.pp) + ALLREDUCE_LATENCY_S)
        return t

    def _pass_s(self, n_prefill: int, prefill_tokens: int, n_decode: int, decode_kv):
        """Seconds of one pass; ``decode_kv`` may be an array (the rest is scalar)."""
        dp, q = self.dp, 1 + self.nextn
        prefill_tokens = max(0, prefill_tokens)
        n_prefill = max(1, n_prefill) if prefill_tokens > 0 else 0
        isl = prefill_tokens / n_prefill if n_prefill else 0.0
        # per DP rank
        t_pre, n_dec, kv = prefill_tokens / dp, n_decode / dp, np.asarray(decode_kv, dtype=float) / dp
        tokens = t_pre + n_dec * q
        logits = n_prefill / dp + n_dec * q
        flops = (2.0 * self._body_params * tokens + 2.0 * self._lm_head * logits
                 + self._attn_pre * t_pre * isl / 2 + self._attn_dec * kv * q) / self.hw.tp * self._pp_factor
        compute = flops / self._flops
        weights = self._weight_bytes
        if self._expert_bytes:
            s = self.shape
            hit = min(1.0, (prefill_tokens + n_decode * q) * s.experts_per_token / s.num_experts)
            weights -= self._expert_bytes * (1.0 - hit)
        memory = (weights + (kv + tokens) * self._kv_bytes) / self._mem_bw
        return np.maximum(compute, memory) + self._comm_s(tokens) + PASS_OVERHEAD_MS / 1e3

    # -- the scheduler's and the planner's interface -------------------------------------------------------
    def pass_ms(self, n_prefill: int, prefill_tokens: int, n_decode: int, decode_kv: int) -> float:
        if prefill_tokens <= 0 and n_decode <= 0:
            return 0.0
        return float(self._pass_s(n_prefill, prefill_tokens, max(0, n_decode), decode_kv) * 1e3)

    def prefill_ms(self, batch_size: int, mean_isl: int, mean_prefix: int) -> float:
        t = batch_size * (mean_isl - mean_prefix)
        return self.pass_ms(batch_size, t, 0, 0) if t > 0 else 0.0

    def decode_ms(self, active_kv_tokens: int, mean_ctx: float, total_kv_tokens: int) -> float:
        n = max(1, round(active_kv_tokens / mean_ctx)) if mean_ctx > 0 else 1
        return self.pass_ms(0, 0, n, int(active_kv_tokens))

    def decode_ms_vec(self, active_kv_tokens: np.ndarray, mean_ctx: np.ndarray, total_kv_tokens: int) -> np.ndarray:
        if len(active_kv_tokens) == 0:
            return np.zeros(0)
        m = float(mean_ctx[0])
        n = max(1, int(round(float(active_kv_tokens[0]) / m))) if m > 0 else 1
        kv = np.asarray(active_kv_tokens, dtype=np.int64).astype(float)
        return np.asarray(self._pass_s(0, 0, n, kv), dtype=float) * 1e3
