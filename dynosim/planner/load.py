"""Load-based scaling: ±1 replica per decision from what the engines report now.

Each engine reports an ``EngineLoad`` snapshot (as Dynamo's planner reads
its workers' forward-pass metrics). Per optimization target:

- ``throughput`` / ``latency``: prefill engines by queued prefill work
  r = queued prompt tokens / one pass's budget (throughput: up if any r ≥ 1,
  down if all r < 0.1; latency: up if any r ≥ 0.1, down if all r = 0);
  decode and aggregated engines by KV demand u = (scheduled + queued KV
  tokens) / capacity (throughput: up if any u > 1, down if all u < 0.6;
  latency: up if any u > 0.4, down if all u < 0.1).
- ``sla``: each engine's TTFT and ITL are estimated from its queue with the
  worker's pass times; up if *every* engine misses the objective, down if every
  engine is below objective × sensitivity (aggregated: up if all miss TTFT or
  all miss ITL, down only if both are comfortably met). Decode and aggregated
  engines also scale up when every one has more KV demand than capacity
  (requests wait for blocks: a TTFT the ITL estimate cannot see), and down
  only when every one is below sensitivity × capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynosim.planner.capacity import WorkerCapacity

THRESHOLDS = {
    # target: (prefill up if any r >= , prefill down if all r < , kv up if any u > , kv down if all u < )
    "throughput": (1.0, 0.1, 1.0, 0.6),
    "latency": (0.1, 1e-12, 0.4, 0.1),
}


@dataclass(frozen=True)
class EngineLoad:
    """What one engine reports at a load tick."""

    queued_prefill_tokens: int     # prompt tokens still to prefill (waiting + partially prefilled)
    scheduled_kv_tokens: int       # KV tokens held by running requests
    queued_kv_tokens: int          # KV tokens waiting requests will need
    num_decode: int                # running requests past their prompt
    max_kv_tokens: int


def estimate_ttft_ms(e: EngineLoad, w: WorkerCapacity, avg_isl: float, kv_hit: float) -> float:
    """Queued prefill work plus one average prompt, after prefix hits, in budget-sized passes."""
    work = (e.queued_prefill_tokens + avg_isl) * (1.0 - kv_hit)
    return w.prefill_ms(work) if work >= 1 else 0.0


def estimate_itl_ms(e: EngineLoad, w: WorkerCapacity, avg_ctx: float) -> float:
    """One decode step with every running and queued request plus one more."""
    batch = e.num_decode + 1
    kv = e.scheduled_kv_tokens + e.queued_kv_tokens + avg_ctx
    return w.decode_step_ms(batch, kv / batch)


def decide(role: str, target: str, loads: list[EngineLoad], w: WorkerCapacity,
           *, ttft_ms: float, itl_ms: float, avg_isl: float, avg_ctx: float, kv_hit: float,
           down_sensitivity: float = 0.8) -> int:
    """+1, -1 or 0 for a pool with ``role`` in {"prefill", "decode", "aggregated"}."""
    if not loads:
        return 0
    if target == "sla":
        ttft = [estimate_ttft_ms(e, w, avg_isl, kv_hit) for e in loads] if role != "decode" else []
        itl = [estimate_itl_ms(e, w, avg_ctx) for e in loads] if role != "prefill" else []
        if role == "prefill":
            return _sla_vote(ttft, ttft_ms, down_sensitivity)
        # requests waiting for KV space on every engine: their TTFT grows by a queue the ITL estimate cannot see
        kv_full = all(e.scheduled_kv_tokens + e.queued_kv_tokens > e.max_kv_tokens for e in loads)
        kv_easy = all(e.scheduled_kv_tokens + e.queued_kv_tokens < down_sensitivity * e.max_kv_tokens for e in loads)
        if role == "decode":
            if kv_full:
                return 1
            vote = _sla_vote(itl, itl_ms, down_sensitivity)
            return vote if vote >= 0 or kv_easy else 0
        if kv_full or all(t > ttft_ms for t in ttft) or all(t > itl_ms for t in itl):
            return 1
        if kv_easy and all(t < ttft_ms * down_sensitivity for t in ttft) and \
                all(t < itl_ms * down_sensitivity for t in itl):
            return -1 if len(loads) > 1 else 0
        return 0
    p_up, p_down, u_up, u_down = THRESHOLDS[target]
    if role == "prefill":
        r = [e.queued_prefill_tokens / w.max_num_batched_tokens for e in loads]
        if any(x >= p_up for x in r):
            return 1
        return -1 if len(loads) > 1 and all(x < p_down for x in r) else 0
    u = [(e.scheduled_kv_tokens + e.queued_kv_tokens) / e.max_kv_tokens for e in loads]
    if any(x > u_up for x in u):
        return 1
    return -1 if len(loads) > 1 and all(x < u_down for x in u) else 0


def _sla_vote(values: list[float], slo: float, sensitivity: float) -> int:
    if all(v > slo for v in values):
        return 1
    if len(values) > 1 and all(v < slo * sensitivity for v in values):
        return -1
    return 0
