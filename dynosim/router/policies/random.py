"""Uniformly random worker, from a seeded generator (deterministic per seed)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dynosim.request import Request
from dynosim.router.policies.base import StatelessPolicy


class RandomPolicy(StatelessPolicy):
    name = "random"

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)

    def select(self, req: Request, workers: Sequence[int]) -> int:
        return workers[int(self._rng.integers(len(workers)))]
