"""KvCache: block pool, prefix cache, LRU eviction and KV events (Dynamo 1.6.1 semantics, notes §4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynosim.engines.mocker.kv_cache import KvCache
from dynosim.router.kv_event import KvEvent


class Sink:
    """Records KV events and keeps the resident set an indexer would see."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[int], int | None]] = []
        self.resident: set[int] = set()

    def __call__(self, event: KvEvent) -> None:
        assert type(event) is KvEvent and type(event.block_hashes) is tuple
        kind, hashes, parent = event
        self.events.append((kind, list(hashes), parent))
        if kind == "stored":
            assert not (set(hashes) & self.resident), "stored a block that is already resident"
            self.resident.update(hashes)
        else:
            assert kind == "removed"
            assert set(hashes) <= self.resident, "removed a block that was never stored"
            self.resident.difference_update(hashes)


def lru(kv: KvCache) -> list[int]:
    """Cached free blocks, next victim first."""
    return list(kv.inactive)


def test_constructor_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="positive"):
        KvCache(0, 16)
    with pytest.raises(ValueError, match="positive"):
        KvCache(4, 0)


def test_acquire_stores_new_blocks_in_one_event_with_parent():
    sink = Sink()
    kv = KvCache(8, 16, sink)
    assert kv.acquire([1, 2, 3], None) == 3
    assert sink.events == [("stored", [1, 2, 3], None)]
    assert kv.active == {1: 1, 2: 1, 3: 1}
    assert kv.used == 3 and kv.num_active == 3 and kv.free_slots() == 5
    # extending the chain: only the new block is stored, parented on the last hit
    assert kv.acquire([1, 2, 3, 4], None) == 4
    assert sink.events[-1] == ("stored", [4], 3)
    assert kv.active == {1: 2, 2: 2, 3: 2, 4: 1}
    assert kv.used == 4 and kv.stored_events == 2 and kv.removed_events == 0


def test_active_hit_shares_the_block_and_release_keeps_it_cached():
    sink = Sink()
    kv = KvCache(4, 16, sink)
    kv.acquire([1, 2], None)
    kv.acquire([1, 2], None)  # second sequence shares both blocks
    assert kv.active == {1: 2, 2: 2} and kv.used == 2
    assert len(sink.events) == 1
    kv.release([1, 2])
    assert kv.active == {1: 1, 2: 1} and lru(kv) == []
    kv.release([1, 2])
    assert kv.active == {} and lru(kv) == [2, 1]  # tail first into the LRU
    assert kv.used == 2 and kv.num_active == 0 and kv.free_slots() == 4
    assert kv.match_prefix([1, 2, 3]) == 2
    assert kv.match_prefix_split([1, 2, 3]) == (2, 0)


def test_reactivating_a_cached_block_emits_nothing():
    sink = Sink()
    kv = KvCache(4, 16, sink)
    kv.acquire([1, 2], None)
    kv.release([1, 2])
    n_events = len(sink.events)
    assert kv.acquire([1, 2, 3], None) == 3
    assert kv.active == {1: 1, 2: 1, 3: 1} and lru(kv) == []
    assert sink.events[n_events:] == [("stored", [3], 2)]


def test_match_prefix_split_counts_leading_resident_blocks_and_active_ones():
    kv = KvCache(8, 16)
    kv.acquire([1, 2, 3], None)
    kv.release([1, 2, 3])      # all cached, free
    kv.acquire([1], None)      # block 1 active again
    assert kv.match_prefix_split([1, 2, 3, 4]) == (3, 1)
    assert kv.match_prefix_split([9, 1, 2]) == (0, 0)  # leading only
    assert kv.match_prefix_split([1, 5, 3]) == (1, 1)  # stops at the first miss


def test_free_capacity_is_used_before_any_eviction():
    sink = Sink()
    kv = KvCache(4, 16, sink)
    kv.acquire([1, 2], None)
    kv.release([1, 2])
    assert kv.acquire([3, 4], None) == 2
    assert kv.removed_events == 0 and lru(kv) == [2, 1]
    assert kv.acquire([5], None) == 1  # now full: the LRU head goes
    assert sink.events[-2:] == [("removed", [2], None), ("stored", [5], None)]
    assert lru(kv) == [1]


def test_lru_probe_tail_first_global_lru_by_release_time():
    """Dynamo's 8-block LRU probe (notes §4.3), one block per 64 tokens."""
    sink = Sink()
    kv = KvCache(8, 64, sink)
    r1, r2 = [1, 2, 3, 4], [11, 12, 13, 14]
    kv.acquire(r1, None)
    kv.acquire(r2, None)
    kv.release(r1)
    kv.release(r2)
    assert lru(kv) == [4, 3, 2, 1, 14, 13, 12, 11]
    # R3 needs 2 fresh blocks: R1's tail blocks 4 and 3 are evicted, in one event
    assert kv.acquire([21, 22], None) == 2
    assert sink.events[-2] == ("removed", [4, 3], None)
    # R4 = [1..4, 5] hits 2 blocks; its 3 new blocks evict R2's 14, 13, 12
    assert kv.match_prefix([1, 2, 3, 4, 5]) == 2
    assert kv.acquire([1, 2, 3, 4, 5], None) == 5
    assert sink.events[-2] == ("removed", [14, 13, 12], None)
    assert sink.events[-1] == ("stored", [3, 4, 5], 2)
    # R5 = [11..15] hits only block 11
    assert kv.match_prefix([11, 12, 13, 14, 15]) == 1
    assert sink.resident == set(kv.active) | set(kv.inactive)
    kv.check()


def test_eviction_order_follows_release_time_not_acquisition_time():
    kv = KvCache(4, 16)
    kv.acquire([1, 2], None)
    kv.acquire([3, 4], None)
    kv.release([3, 4])  # released first although acquired later
    kv.release([1, 2])
    kv.acquire([5], None)
    assert 4 not in kv.inactive and kv.match_prefix([3]) == 1 and kv.match_prefix([1, 2]) == 2
    kv.acquire([6, 7], None)
    assert lru(kv) == [1]
    assert kv.match_prefix([3]) == 0


def test_acquire_stops_at_first_failure_and_reports_only_what_it_took():
    sink = Sink()
    kv = KvCache(3, 16, sink)
    kv.acquire([1, 2], None)
    assert kv.acquire([3, 4, 5], 2) == 1
    assert kv.active == {1: 1, 2: 1, 3: 1}
    assert sink.events[-1] == ("stored", [3], 2)
    assert kv.acquire([9], None) == 0
    assert kv.used == 3
    kv.check()


def test_partial_blocks_count_as_whole_blocks_and_are_never_shared():
    sink = Sink()
    kv = KvCache(3, 16, sink)
    assert kv.acquire_partial() and kv.acquire_partial()
    assert kv.used == 2 and kv.num_active == 2 and kv.free_slots() == 1
    assert sink.events == []  # partial blocks are invisible to the indexer
    kv.acquire([1], None)
    assert not kv.acquire_partial()  # full, nothing evictable
    assert kv.n_partial == 2 and kv.used == 3
    kv.release_partial()
    assert kv.used == 2 and kv.free_slots() == 1
    kv.release([1])  # block 1 cached-free: still resident, still counted as used
    assert kv.used == 2 and kv.free_slots() == 2
    assert kv.acquire_partial()  # takes the never-used slot, no eviction
    assert kv.removed_events == 0 and kv.used == 3
    assert kv.acquire_partial()  # full: evicts the cached block 1
    assert sink.events[-1] == ("removed", [1], None)
    assert kv.n_partial == 3 and kv.active == {} and lru(kv) == []
    kv.check()


def test_acquire_partial_evicts_the_lru_head_when_full():
    sink = Sink()
    kv = KvCache(2, 16, sink)
    kv.acquire([1, 2], None)
    kv.release([1, 2])
    assert kv.acquire_partial()
    assert sink.events[-1] == ("removed", [2], None)
    assert lru(kv) == [1] and kv.n_partial == 1 and kv.used == 2


def test_promote_partial_new_hash_is_stored_with_its_parent():
    sink = Sink()
    kv = KvCache(4, 16, sink)
    kv.acquire([1], None)
    kv.acquire_partial()
    kv.promote_partial(2, 1)
    assert kv.n_partial == 0 and kv.active == {1: 1, 2: 1} and kv.used == 2
    assert sink.events[-1] == ("stored", [2], 1)


def test_promote_partial_onto_an_existing_block_merges_without_an_event():
    sink = Sink()
    kv = KvCache(4, 16, sink)
    kv.acquire([1, 2], None)
    kv.acquire([1], None)
    kv.acquire_partial()
    n = len(sink.events)
    kv.promote_partial(2, 1)  # another sequence already holds block 2: share it
    assert kv.active == {1: 2, 2: 2} and kv.n_partial == 0 and kv.used == 2
    kv.release([1, 2])
    kv.release([1, 2])
    kv.acquire([1], None)
    kv.acquire_partial()
    kv.promote_partial(2, 1)  # block 2 is cached-free: reactivated
    assert kv.active == {1: 1, 2: 1} and lru(kv) == [] and kv.n_partial == 0
    assert len(sink.events) == n
    kv.check()


def test_check_detects_broken_invariants():
    kv = KvCache(4, 16)
    kv.acquire([1, 2, 3], None)
    kv.check()
    kv.n_partial += 2  # 5 blocks in a 4-block pool
    with pytest.raises(AssertionError, match="overflow"):
        kv.check()
    kv.n_partial -= 2
    kv.release([3])
    kv.inactive[1] = None  # both active and cached
    with pytest.raises(AssertionError, match="both active and cached"):
        kv.check()
    del kv.inactive[1]
    kv.active[2] = 0
    with pytest.raises(AssertionError, match="refcount"):
        kv.check()


# ---------------------------------------------------------------------------
# random operation sequences against a reference model

ops = st.lists(
    st.one_of(
        st.tuples(st.just("seq"), st.integers(0, 3), st.integers(1, 5)),  # acquire a prefix of doc d
        st.tuples(st.just("release"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("partial"), st.just(0), st.just(0)),
        st.tuples(st.just("unpartial"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 8), ops=ops)
def test_random_operations_conserve_blocks_and_events_mirror_residency(capacity, ops):
    sink = Sink()
    kv = KvCache(capacity, 16, sink)
    held: list[list[int]] = []  # sequences holding references
    partials = 0
    for op, a, b in ops:
        if op == "seq":
            hashes = [a * 100 + j for j in range(b)]
            hit = kv.match_prefix(hashes)
            got = kv.acquire(hashes, None)
            # a resident prefix is re-referenced before anything is evicted
            assert got >= hit
            if got < b:  # failure only when every block is referenced
                assert len(kv.active) + kv.n_partial == capacity and not kv.inactive
            held.append(hashes[:got])
        elif op == "release" and held:
            kv.release(held.pop(a % len(held)))
        elif op == "partial":
            if kv.acquire_partial():
                partials += 1
            else:
                assert kv.free_slots() == 0 and not kv.inactive
        elif op == "unpartial" and partials:
            kv.release_partial()
            partials -= 1
        kv.check()
        # conservation: active + cached + partial + free == capacity, free >= 0
        free = capacity - len(kv.active) - len(kv.inactive) - kv.n_partial
        assert free >= 0 and kv.used + free == capacity
        # refcounts equal the references the sequences hold
        refs: dict[int, int] = {}
        for seq in held:
            for h in seq:
                refs[h] = refs.get(h, 0) + 1
        assert kv.active == refs
        assert kv.n_partial == partials
        # the event stream tells an indexer exactly what is resident
        assert sink.resident == set(kv.active) | set(kv.inactive)
        assert kv.stored_events == sum(e[0] == "stored" for e in sink.events)
        assert kv.removed_events == sum(e[0] == "removed" for e in sink.events)
    for seq in held:
        kv.release(seq)
    assert kv.active == {} and kv.num_active == kv.n_partial == partials
