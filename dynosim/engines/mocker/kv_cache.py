"""Paged KV cache of one engine: block pool, prefix cache, LRU eviction, events.

Full blocks are keyed by their chained sequence hash and shared between
requests (refcounted); a request's unfilled tail is a private partial block.
Blocks whose refcount drops to zero stay cached in an LRU of free blocks and
are evicted oldest-first when a new block needs room. Freeing a sequence
releases its blocks tail-first, so shared prefixes outlive private tails.

Every change to what is cached is reported to the sink as one
``dynosim.router.kv_event.KvEvent`` (``STORED`` / ``REMOVED``: the events a
router's indexer consumes); a reactivated cached block emits nothing, as in vLLM.

Owns the pool only: which blocks exist, their reference counts and the LRU.
Which blocks a request holds (its block table) is the block manager's
(``block_manager.KvBlockManager``), the one caller that acquires and releases.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from dynosim.router.kv_event import REMOVED, STORED, KvEvent, event_of

# Where a KvCache reports changes to what it caches (e.g. the simulated worker's buffer).
EventSink = Callable[[KvEvent], None]


class KvCache:
    __slots__ = ("capacity", "block_size", "active", "inactive", "n_partial", "sink",
                 "stored_events", "removed_events")

    def __init__(self, capacity: int, block_size: int, sink: EventSink | None = None):
        if capacity <= 0 or block_size <= 0:
            raise ValueError("KV cache capacity and block size must be positive")
        self.capacity = capacity
        self.block_size = block_size
        self.active: dict[int, int] = {}                 # hash -> refcount (>0)
        self.inactive: OrderedDict[int, None] = OrderedDict()  # free but cached, LRU first
        self.n_partial = 0
        self.sink = sink
        self.stored_events = 0
        self.removed_events = 0

    # -- accounting -------------------------------------------------------------
    @property
    def used(self) -> int:
        """Blocks holding data: active, cached-free and partial."""
        return len(self.active) + len(self.inactive) + self.n_partial

    @property
    def num_active(self) -> int:
        """Blocks referenced by at least one sequence (unique, partials included)."""
        return len(self.active) + self.n_partial

    def free_slots(self) -> int:
        """Blocks that can be handed out now: never-used ones plus evictable cached ones."""
        return self.capacity - len(self.active) - self.n_partial

    # -- prefix cache -----------------------------------------------------------
    def match_prefix(self, seq_hashes: list[int]) -> int:
        """Number of leading full blocks resident (active or cached)."""
        active, inactive = self.active, self.inactive
        n = 0
        for h in seq_hashes:
            if h in active or h in inactive:
                n += 1
            else:
                break
        return n

    def match_prefix_split(self, seq_hashes: list[int]) -> tuple[int, int]:
        """(leading resident blocks, how many of those are active i.e. referenced)."""
        active, inactive = self.active, self.inactive
        n = 0
        n_active = 0
        for h in seq_hashes:
            if h in active:
                n_active += 1
            elif h not in inactive:
                break
            n += 1
        return n, n_active

    # -- allocation -------------------------------------------------------------
    def _make_room(self) -> bool:
        if len(self.active) + len(self.inactive) + self.n_partial < self.capacity:
            return True
        if not self.inactive:
            return False
        victim, _ = self.inactive.popitem(last=False)
        self.removed_events += 1
        if self.sink is not None:
            self.sink(event_of((REMOVED, (victim,), None)))
        return True

    def acquire(self, hashes: list[int], parent: int | None) -> int:
        """Reference full blocks in order; returns how many succeeded (stops at the first failure).

        Hits (active or cached) are re-referenced; misses take never-used
        capacity first and evict the least recently released cached block only
        when none is left. New blocks form one Stored event, evictions one Removed.
        """
        active, inactive = self.active, self.inactive
        n_total = len(hashes)
        i = 0
        while i < n_total:  # leading hits
            h = hashes[i]
            rc = active.get(h)
            if rc is not None:
                active[h] = rc + 1
            elif h in inactive:
                del inactive[h]
                active[h] = 1
            else:
                break
            i += 1
        if i == n_total:
            return i
        rest = hashes[i:] if i else hashes
        parent_of_rest = hashes[i - 1] if i else parent
        if not (active.keys().isdisjoint(rest) and inactive.keys().isdisjoint(rest)):
            return i + self._acquire_blockwise(rest, parent_of_rest)
        # Common case: every remaining block is new. Take free capacity, evict the rest in LRU order.
        free = self.capacity - len(active) - len(inactive) - self.n_partial
        take = min(len(rest), free + len(inactive))
        if take < len(rest):
            rest = rest[:take]
        if take > free:
            popitem = inactive.popitem
            removed = tuple([popitem(False)[0] for _ in range(take - free)])
            self.removed_events += 1
            if self.sink is not None:
                self.sink(event_of((REMOVED, removed, None)))
        if take:
            active.update(dict.fromkeys(rest, 1))
            self.stored_events += 1
            if self.sink is not None:
                self.sink(event_of((STORED, tuple(rest), parent_of_rest)))
        return i + take

    def _acquire_blockwise(self, hashes: list[int], parent: int | None) -> int:
        active, inactive = self.active, self.inactive
        free = self.capacity - len(active) - len(inactive) - self.n_partial
        stored: list[int] = []
        removed: list[int] = []
        stored_parent = parent
        n = 0
        prev = parent
        for h in hashes:
            rc = active.get(h)
            if rc is not None:
                active[h] = rc + 1
            elif h in inactive:
                del inactive[h]
                active[h] = 1
            else:
                if free > 0:
                    free -= 1
                elif inactive:
                    removed.append(inactive.popitem(last=False)[0])
                else:
                    break
                active[h] = 1
                if not stored:
                    stored_parent = prev
                stored.append(h)
            prev = h
            n += 1
        if removed:
            self.removed_events += 1
            if self.sink is not None:
                self.sink(event_of((REMOVED, tuple(removed), None)))
        if stored:
            self.stored_events += 1
            if self.sink is not None:
                self.sink(event_of((STORED, tuple(stored), stored_parent)))
        return n

    def acquire_partial(self) -> bool:
        if not self._make_room():
            return False
        self.n_partial += 1
        return True

    def release_partial(self) -> None:
        self.n_partial -= 1

    def promote_partial(self, h: int, parent: int | None) -> None:
        """A partial block filled up and became the full block ``h``."""
        self.n_partial -= 1
        rc = self.active.get(h)
        if rc is not None:
            self.active[h] = rc + 1
            return
        if h in self.inactive:
            del self.inactive[h]
            self.active[h] = 1
            return
        self.active[h] = 1
        self.stored_events += 1
        if self.sink is not None:
            self.sink(event_of((STORED, (h,), parent)))

    def release(self, hashes: list[int]) -> None:
        """Drop one reference from each block, tail first (the tail enters the LRU first)."""
        active, inactive = self.active, self.inactive
        for h in reversed(hashes):
            rc = active[h]
            if rc == 1:
                del active[h]
                inactive[h] = None
            else:
                active[h] = rc - 1

    def check(self) -> None:
        """Raise if the conservation invariant is broken (used + free == capacity)."""
        if self.used > self.capacity or self.n_partial < 0:
            raise AssertionError(f"KV overflow: used={self.used} capacity={self.capacity}")
        overlap = self.active.keys() & self.inactive.keys()
        if overlap:
            raise AssertionError(f"blocks both active and cached: {sorted(overlap)[:5]}")
        if any(rc <= 0 for rc in self.active.values()):
            raise AssertionError("active block with non-positive refcount")
