"""Worker capacity: how many requests/s one worker sustains under the SLOs.

The planner sizes pools from a worker's pass times (``capacity.WorkerCapacity``;
in the simulator the same timing model the engines run on, on real hardware the
profile ``dynosim calibrate`` measured), as Dynamo's planner sizes them from its
profiled per-iteration regressions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dynosim.planner.capacity import WorkerCapacity


@dataclass(frozen=True)
class Capacity:
    """One worker's sustainable request rate, the batch it assumes and whether the SLOs can be met at all."""

    rps: float
    batch: int
    meets_slo: bool


def max_batch(w: WorkerCapacity, context: float, kv_utilization: float = 1.0) -> int:
    """Largest decode batch ``max_num_seqs`` and the KV cache (filled to ``kv_utilization``) allow at this
    context length."""
    kv = w.kv_tokens * kv_utilization
    return max(1, min(w.max_num_seqs, int(kv // max(context, 1.0))))


def prefill_capacity(w: WorkerCapacity, isl_eff: float) -> Capacity:
    """Prompts per second one prefill worker finishes, one after another."""
    wt = w.prefill_ms(isl_eff)
    return Capacity(1000.0 / wt if wt > 0 else math.inf, 1, True)


def decode_capacity(w: WorkerCapacity, isl: float, osl: float, itl_ms: float,
                    kv_utilization: float = 1.0) -> Capacity:
    """Little's law at the largest batch whose step meets the ITL objective, at context isl + osl/2.

    ``kv_utilization`` < 1 keeps headroom in the KV cache: at 100% the mean
    batch fills it, so any burst or long request queues (or preempts).
    """
    osl = max(osl, 1.0)
    ctx = isl + osl / 2.0
    hi = max_batch(w, ctx, kv_utilization)
    lo, best = 1, 0
    while lo <= hi:                       # step time grows with the batch: binary search
        mid = (lo + hi) // 2
        if w.decode_step_ms(mid, ctx) <= itl_ms:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    meets = best > 0
    b = best if meets else 1
    wt = w.decode_step_ms(b, ctx)
    return Capacity(b / (osl * wt / 1000.0) if wt > 0 else math.inf, b, meets)


def agg_capacity(w: WorkerCapacity, isl_eff: float, isl: float, osl: float,
                 ttft_ms: float, itl_ms: float, kv_utilization: float = 1.0) -> Capacity:
    """Aggregated worker: each pass decodes the batch and prefills its share of new prompts.

    At batch b in steady state every pass prefills b·isl_eff/osl tokens (b
    requests replaced every osl passes), so a pass lasts prefill(that) +
    decode(b, b·ctx); that is the ITL. A new prompt is prefilled in chunks of
    the budget left after the decodes, one chunk per pass: that is the TTFT.
    The best rate b / (osl · pass) among batches meeting both objectives wins.
    """
    osl = max(osl, 1.0)
    ctx = isl + osl / 2.0
    mbt = w.max_num_batched_tokens
    cap = max_batch(w, ctx, kv_utilization)
    if isl_eff > 0:
        cap = min(cap, int(mbt - isl_eff / osl)) if mbt - isl_eff / osl >= 1 else 1

    def at(b: int) -> tuple[Capacity, bool]:
        per_pass_prefill = min(b * isl_eff / osl, mbt)
        dec = w.decode_step_ms(b, ctx)
        step = (w.prefill_ms(per_pass_prefill) if per_pass_prefill >= 1 else 0.0) + dec
        chunk = max(mbt - b, 1)
        passes = math.ceil(isl_eff / chunk) if isl_eff > 0 else 1
        ttft = passes * (w.prefill_ms(min(isl_eff, chunk)) + dec) if isl_eff > 0 else dec
        rps = b / (osl * step / 1000.0) if step > 0 else math.inf
        return Capacity(rps, b, True), step <= itl_ms and ttft <= ttft_ms

    # pass time and TTFT grow with the batch while the rate b / (osl · pass) does too (the pass grows
    # slower than linearly from a fixed cost): the best batch is the largest feasible one
    lo, hi, best = 1, max(cap, 1), None
    while lo <= hi:
        mid = (lo + hi) // 2
        c, ok = at(mid)
        if ok:
            best, lo = c, mid + 1
        else:
            hi = mid - 1
    if best is not None:
        return best
    c, _ = at(1)
    return Capacity(c.rps, 1, False)


def replicas_for(demand_rps: float, cap: Capacity, floor: int) -> int:
    """Workers needed for the demand, at least ``floor``."""
    if demand_rps <= 0 or math.isinf(cap.rps):
        return floor
    return max(floor, math.ceil(demand_rps / cap.rps - 1e-9))
