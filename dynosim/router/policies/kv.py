"""KV-aware routing: Dynamo's cost of prefill work left after cache hits plus decode blocks.

For each candidate worker w, with ``ov`` the request's prefix depth in w's
cache (from the indexer) and ``m`` its depth among w's active blocks::

    logit[w] = prefill_load_scale · max(0, (active_prefill_tokens[w] + isl)/bs − credit·ov)
               + active_blocks[w] + (q − m)          # q = full prompt blocks

The lowest logit wins; exact ties are broken uniformly at random (Dynamo 1.6.1)
or, with ``tie_break="tree-size"``, by the smaller cache first (older Dynamo).
With a temperature > 0 the worker is sampled from a softmax over the logits
normalised by their range.
"""

from __future__ import annotations

from typing import ClassVar

from dynosim.request import Request
from dynosim.router.context import RoutingContext, argmin_random, softmax_sample


class KvPolicy:
    name: ClassVar[str] = "kv"
    uses_overlap: ClassVar[bool] = True
    uses_load: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ("overlap_score_credit", "prefill_load_scale", "temperature", "tie_break",
                                          "track_active_blocks", "assume_kv_reuse")

    def __init__(self, seed: int = 0, *, overlap_score_credit: float = 1.0, prefill_load_scale: float = 1.0,
                 temperature: float = 0.0, tie_break: str = "random", track_active_blocks: bool = True,
                 assume_kv_reuse: bool = True, **_: object):
        """``track_active_blocks=False``: no decode-blocks term (Dynamo's prefill router in disaggregated
        serving); ``assume_kv_reuse=False``: active blocks counted without deduplication across requests
        (its decode router)."""
        if not 0.0 <= overlap_score_credit <= 1.0:
            raise ValueError("overlap_score_credit must be in [0, 1]")
        if prefill_load_scale < 0 or temperature < 0:
            raise ValueError("prefill_load_scale and temperature must be >= 0")
        if tie_break not in ("random", "tree-size"):
            raise ValueError("tie_break must be 'random' or 'tree-size'")
        self.credit = overlap_score_credit
        self.scale = prefill_load_scale
        self.temperature = temperature
        self.tie_break = tie_break
        self.track_active_blocks = track_active_blocks
        self.assume_kv_reuse = assume_kv_reuse

    def logits(self, req: Request, ctx: RoutingContext) -> list[float]:
        bs = ctx.block_size
        ov = ctx.overlap(req)
        load = ctx.load
        q = len(req.seq_hashes)
        isl = req.isl
        A = load.prefill_tokens
        credit, scale = self.credit, self.scale
        out = []
        if self.track_active_blocks and self.assume_kv_reuse:  # the default, and the hot path
            m, D = load.active_depths(req.seq_hashes), load.distinct_blocks
            for w in ctx.workers:
                prefill = (A[w] + isl) / bs - credit * ov[w]
                if prefill < 0.0:
                    prefill = 0.0
                out.append(scale * prefill + D[w] + (q - m[w]))
            return out
        T = load.total_blocks
        for w in ctx.workers:
            prefill = (A[w] + isl) / bs - credit * ov[w]
            if prefill < 0.0:
                prefill = 0.0
            out.append(scale * prefill + ((T[w] + q) if self.track_active_blocks else 0))
        return out

    def select(self, req: Request, ctx: RoutingContext) -> int:
        logits = self.logits(req, ctx)
        if self.temperature > 0:
            w = softmax_sample(logits, ctx.workers, self.temperature, ctx.rng)
        else:
            tb = [ctx.tree_sizes[w] for w in ctx.workers] if self.tie_break == "tree-size" and ctx.tree_sizes \
                else None
            w = argmin_random(logits, ctx.workers, ctx.rng, tb)
        req.router_score = logits[list(ctx.workers).index(w)]
        return w

    def on_first_token(self, req: Request, now: float) -> None:
        return None

    def on_complete(self, req: Request, now: float) -> None:
        return None
