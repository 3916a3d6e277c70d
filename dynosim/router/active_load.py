"""Router-side bookkeeping of in-flight work per worker, as Dynamo's KV router keeps it.

- prefill tokens: each routed request adds ``max(0, isl − bs·overlap)`` (its
  uncached prompt as the router saw it) until its first token;
- active blocks: the distinct prompt block hashes of requests routed to the
  worker and not yet completed (output blocks are not tracked).

The router never looks inside engines for this; it only sees its own routing
decisions and the request lifecycle (first token, completion).
"""

from __future__ import annotations

from typing import Sequence

from dynosim.router.indexer import leading_depths



class ActiveLoad:
    def __init__(self, n_workers: int):
        self.n_workers = n_workers
        self.prefill_tokens: list[int] = [0] * n_workers
        self.distinct_blocks: list[int] = [0] * n_workers
        self.total_blocks: list[int] = [0] * n_workers   # without deduplication (Dynamo's assume_kv_reuse=false)
        self.requests: list[int] = [0] * n_workers
        self._counts: list[dict[int, int]] = [{} for _ in range(n_workers)]
        self._inflight: dict[int, tuple[int, Sequence[int], int]] = {}  # rid -> (worker, hashes, prefill)

    def add_worker(self) -> int:
        self.n_workers += 1
        self.prefill_tokens.append(0)
        self.distinct_blocks.append(0)
        self.total_blocks.append(0)
        self.requests.append(0)
        self._counts.append({})
        return self.n_workers - 1

    def add(self, rid: int, worker: int, seq_hashes: Sequence[int], prefill_tokens: int) -> None:
        if rid in self._inflight:
            raise ValueError(f"request {rid} is already tracked")
        self._inflight[rid] = (worker, seq_hashes, prefill_tokens)
        self.prefill_tokens[worker] += prefill_tokens
        self.requests[worker] += 1
        self.total_blocks[worker] += len(seq_hashes)
        counts = self._counts[worker]
        if counts.keys().isdisjoint(seq_hashes):
            counts.update(dict.fromkeys(seq_hashes, 1))
            self.distinct_blocks[worker] += len(seq_hashes)
            return
        new = 0
        for h in seq_hashes:
            c = counts.get(h)
            if c is None:
                counts[h] = 1
                new += 1
            else:
                counts[h] = c + 1
        self.distinct_blocks[worker] += new

    def prefill_done(self, rid: int) -> None:
        """First token: the request's prefill load leaves its worker (idempotent)."""
        entry = self._inflight.get(rid)
        if entry is None or entry[2] == 0:
            return
        worker, hashes, tokens = entry
        self.prefill_tokens[worker] -= tokens
        self._inflight[rid] = (worker, hashes, 0)

    def free(self, rid: int) -> None:
        """Completion (or failure): everything the request held is released."""
        entry = self._inflight.pop(rid, None)
        if entry is None:
            return
        worker, hashes, tokens = entry
        self.prefill_tokens[worker] -= tokens
        self.requests[worker] -= 1
        self.total_blocks[worker] -= len(hashes)
        counts = self._counts[worker]
        cs = list(map(counts.__getitem__, hashes))
        if cs.count(1) == len(cs):
            list(map(counts.__delitem__, hashes))
            self.distinct_blocks[worker] -= len(cs)
            return
        gone = 0
        for h, c in zip(hashes, cs):
            if c == 1:
                del counts[h]
                gone += 1
            else:
                counts[h] = c - 1
        self.distinct_blocks[worker] -= gone

    def active_depths(self, seq_hashes: Sequence[int]) -> list[int]:
        """Per worker, leading blocks of the request already among its active blocks."""
        return leading_depths(self._counts, seq_hashes)
