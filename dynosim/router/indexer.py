"""KV indexer: which worker holds which prompt blocks, for prefix-overlap routing.

Engines report ``KvEvent``s (``router.kv_event``: ``STORED``, parent-linked, and
``REMOVED``); the indexer answers ``find_matches(sequence_hashes)``: per worker, how many
leading blocks of the request it holds (prefix depth), plus how many blocks
each worker holds (tree size).

Because a block's sequence hash already chains its whole prefix, a radix tree
over local hashes and a flat set of sequence hashes per worker answer the same
prefix queries. The flat sets win in Python: engine events (millions of blocks
per trace) become single C-level set updates, and a lookup walks each worker's
set until its first miss (see benchmarks/indexer_speed.py). The approximate
indexer keeps hash -> worker bitmask so expiry can be tracked per entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from dynosim.router.kv_event import REMOVED, STORED, KvEvent


@dataclass(slots=True)
class OverlapScores:
    """Per-worker prefix depth (blocks) and tree size (blocks held)."""

    depths: list[int]
    tree_sizes: list[int]


def leading_depths(containers: Sequence, seq_hashes: Sequence[int]) -> list[int]:
    """For each container (a set or dict of block hashes), how many leading hashes it holds."""
    if not seq_hashes:
        return [0] * len(containers)
    h0 = seq_hashes[0]
    n = len(seq_hashes)
    out = []
    for held in containers:
        if h0 not in held:
            out.append(0)
            continue
        i = 1
        while i < n and seq_hashes[i] in held:
            i += 1
        out.append(i)
    return out


class KvIndexer:
    """Exact indexer fed by engine KV events.

    Each worker's resident blocks are a Python set, so Stored/Removed events
    (the bulk of the traffic: millions of blocks per trace) are single C-level
    ``update`` / ``difference_update`` calls, and a lookup walks each worker's
    set only until its first miss.
    """

    def __init__(self, n_workers: int):
        self.n_workers = n_workers
        self._held: list[set[int]] = [set() for _ in range(n_workers)]
        self.events = 0

    @property
    def tree_sizes(self) -> list[int]:
        return [len(h) for h in self._held]

    def add_worker(self) -> int:
        self.n_workers += 1
        self._held.append(set())
        return self.n_workers - 1

    def apply_stored(self, worker: int, hashes: Iterable[int], parent: int | None = None) -> None:
        self._held[worker].update(hashes)
        self.events += 1

    def apply(self, worker: int, event: KvEvent) -> None:
        """Apply one engine event of ``worker`` (the parent link is implied by the chained hashes)."""
        kind = event[0]
        if kind == STORED:
            self._held[worker].update(event[1])
        elif kind == REMOVED:
            self._held[worker].difference_update(event[1])
        else:
            raise ValueError(f"unknown KV event kind {kind!r}")
        self.events += 1

    def remove_worker(self, worker: int) -> None:
        """Forget everything a worker held (it left the pool)."""
        self._held[worker] = set()

    def find_matches(self, seq_hashes: Sequence[int]) -> OverlapScores:
        return OverlapScores(self.depths(seq_hashes), self.tree_sizes)

    def depths(self, seq_hashes: Sequence[int]) -> list[int]:
        """Per worker, the number of leading blocks it holds."""
        return leading_depths(self._held, seq_hashes)


def _bitmask_depths(holders: dict[int, int], seq_hashes: Sequence[int], n_workers: int) -> list[int]:
    """Leading blocks held per worker, from a map hash -> bitmask of holders."""
    depths = [0] * n_workers
    if not seq_hashes:
        return depths
    get = holders.get
    cur = get(seq_hashes[0], 0)
    i = 0
    n = len(seq_hashes)
    while cur:
        i += 1
        if i == n:
            break
        nxt = cur & get(seq_hashes[i], 0)
        gone = cur ^ nxt
        while gone:
            low = gone & -gone
            depths[low.bit_length() - 1] = i
            gone ^= low
        cur = nxt
    while cur:
        low = cur & -cur
        depths[low.bit_length() - 1] = i
        cur ^= low
    return depths


class ApproxIndexer:
    """Indexer without engine events: the router records its own routing decisions.

    Each decision inserts the request's blocks on the chosen worker with an
    expiry ``now + ttl``; re-routing refreshes it. Expired entries are ignored
    and purged lazily; above ``max_blocks`` the earliest-expiring entries (then
    the deepest blocks) are pruned down to ``prune_ratio`` of the cap.
    """

    def __init__(self, n_workers: int, ttl_ms: float = 120_000.0, max_blocks: int = 1 << 20,
                 prune_ratio: float = 0.8):
        if ttl_ms <= 0 or max_blocks <= 0 or not 0 < prune_ratio <= 1:
            raise ValueError("ttl_ms and max_blocks must be positive and prune_ratio in (0, 1]")
        self.n_workers = n_workers
        self.ttl_ms = ttl_ms
        self.max_blocks = max_blocks
        self.prune_ratio = prune_ratio
        self._expiry: dict[tuple[int, int], tuple[float, int]] = {}  # (hash, worker) -> (expiry, position)
        self._holders: dict[int, int] = {}
        self.tree_sizes: list[int] = [0] * n_workers
        self.events = 0

    def add_worker(self) -> int:
        self.n_workers += 1
        self.tree_sizes.append(0)
        return self.n_workers - 1

    def record(self, worker: int, seq_hashes: Sequence[int], now: float) -> None:
        exp = now + self.ttl_ms
        bit = 1 << worker
        holders, expiry = self._holders, self._expiry
        for pos, h in enumerate(seq_hashes):
            m = holders.get(h, 0)
            if not m & bit:
                holders[h] = m | bit
                self.tree_sizes[worker] += 1
            expiry[(h, worker)] = (exp, pos)
        self.events += 1
        if len(expiry) > self.max_blocks:
            self._prune(int(self.max_blocks * self.prune_ratio))

    def _drop(self, h: int, worker: int) -> None:
        del self._expiry[(h, worker)]
        m = self._holders[h] & ~(1 << worker)
        if m:
            self._holders[h] = m
        else:
            del self._holders[h]
        self.tree_sizes[worker] -= 1

    def _prune(self, target: int) -> None:
        order = sorted(self._expiry.items(), key=lambda kv: (kv[1][0], -kv[1][1]))
        for (h, w), _ in order[: len(order) - target]:
            self._drop(h, w)

    def expire(self, now: float) -> None:
        for key in [k for k, (e, _) in self._expiry.items() if e <= now]:
            self._drop(*key)

    def remove_worker(self, worker: int) -> None:
        for key in [k for k in self._expiry if k[1] == worker]:
            self._drop(*key)

    def depths_at(self, seq_hashes: Sequence[int], now: float) -> list[int]:
        depths = _bitmask_depths(self._holders, seq_hashes, self.n_workers)
        # A stale entry ends a worker's match where it expired.
        expiry = self._expiry
        for w, d in enumerate(depths):
            for pos in range(d):
                if expiry[(seq_hashes[pos], w)][0] <= now:
                    depths[w] = pos
                    break
        return depths
