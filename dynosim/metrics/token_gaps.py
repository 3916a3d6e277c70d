"""Inter-token gaps of a run, pooled over all requests (Dynamo's "ITL" distribution, ``token_gap_ms``)."""

from __future__ import annotations

import numpy as np


class TokenGaps:
    """Inter-token gaps of all requests as (value ms, count) pairs.

    Regular passes add single gaps; a fast-forwarded stretch adds one entry per
    pass (its duration) counted once per running request, into growable numpy
    buffers, so millions of gaps cost a few slice copies.
    """

    __slots__ = ("values", "counts", "runs", "_buf_v", "_buf_n", "_pos")

    def __init__(self) -> None:
        self.values: list[float] = []   # single gaps from regular passes
        self.counts: list[int] = []
        self._buf_v = np.empty(1 << 16)
        self._buf_n = np.empty(1 << 16, np.int32)
        self._pos = 0
        self.runs = 0  # fast-forwarded stretches recorded

    def add_run(self, durations: np.ndarray, n_requests: int) -> None:
        k = len(durations)
        end = self._pos + k
        if end > len(self._buf_v):
            size = max(2 * len(self._buf_v), end)
            self._buf_v = np.resize(self._buf_v, size)
            self._buf_n = np.resize(self._buf_n, size)
        self._buf_v[self._pos:end] = durations
        self._buf_n[self._pos:end] = n_requests
        self._pos = end
        self.runs += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All gaps as (values, counts) arrays (views into the buffers; the singles are moved in)."""
        if self.values:
            self.add_run(self.values, 1)
            self._buf_n[self._pos - len(self.values):self._pos] = self.counts
            self.runs -= 1
            self.values, self.counts = [], []
        return self._buf_v[:self._pos], self._buf_n[:self._pos]
