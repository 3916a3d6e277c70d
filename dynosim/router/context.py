"""What a routing policy sees when it picks a worker: plain data and a clock time."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from dynosim.request import Request
from dynosim.router.active_load import ActiveLoad


@dataclass
class RoutingContext:
    """Candidates, in-flight load, prefix overlap (lazily) and the router's RNG."""

    workers: Sequence[int]
    load: ActiveLoad
    now: float
    block_size: int
    rng: random.Random
    overlap_fn: Callable[[Request], list[int]] | None = None
    tree_sizes: Sequence[int] = ()
    # engine-side load as a live router would scrape it: worker -> (KV usage 0..1, waiting requests)
    metrics_fn: Callable[[int], tuple[float, int]] | None = None
    _overlap: dict[int, list[int]] = field(default_factory=dict)

    def overlap(self, req: Request) -> list[int]:
        """Per worker id, leading prompt blocks cached there (as the indexer knows it)."""
        cached = self._overlap.get(req.rid)
        if cached is None:
            cached = self.overlap_fn(req) if self.overlap_fn is not None else [0] * self.load.n_workers
            self._overlap[req.rid] = cached
        return cached


def engine_metrics(ctx: "RoutingContext", worker: int) -> tuple[float, int]:
    """(KV usage, waiting requests) of a worker, or zeros when no metrics source is wired."""
    return ctx.metrics_fn(worker) if ctx.metrics_fn is not None else (0.0, 0)


def argmin_random(costs: Sequence[float], candidates: Sequence[int], rng: random.Random,
                  tiebreak: Sequence[float] | None = None) -> int:
    """The candidate with the lowest cost; exact ties by ``tiebreak`` (lower first), then uniformly at random."""
    best = min(costs)
    tied = [c for c, x in zip(candidates, costs) if x == best]
    if len(tied) > 1 and tiebreak is not None:
        tb = [tiebreak[i] for i, x in enumerate(costs) if x == best]
        low = min(tb)
        tied = [c for c, t in zip(tied, tb) if t == low]
    if len(tied) == 1:
        return tied[0]
    return tied[rng.randrange(len(tied))]


def softmax_sample(logits: Sequence[float], candidates: Sequence[int], temperature: float,
                   rng: random.Random) -> int:
    """Sample a candidate with p ∝ exp(−(logit/range)/T) (lower logit, likelier), as Dynamo does."""
    import math

    lo, hi = min(logits), max(logits)
    if hi == lo:
        return candidates[rng.randrange(len(candidates))]
    span = hi - lo
    scaled = [-(x / span) / temperature for x in logits]
    top = max(scaled)
    weights = [math.exp(s - top) for s in scaled]
    u = rng.random() * sum(weights)
    acc = 0.0
    for c, wgt in zip(candidates, weights):
        acc += wgt
        if u < acc:
            return c
    return candidates[-1]
