"""Router mechanisms on hand-built states: indexer, in-flight load, policies, queue."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynosim.request import Request
from dynosim.router.active_load import ActiveLoad
from dynosim.router.context import RoutingContext, argmin_random, softmax_sample
from dynosim.router.indexer import ApproxIndexer, KvIndexer
from dynosim.router.kv_event import KvEvent, KvEventKind
from dynosim.router.policies import make_policy
from dynosim.router.queue import RouterQueue
from dynosim.router.router import Router


def mkreq(rid, hashes, isl=None, priority=0, hints=None, arrival=0.0):
    isl = isl if isl is not None else 64 * len(hashes)
    return Request(rid, isl, 4, (), list(hashes), arrival, priority=priority, hints=hints)


def ctx(n, load=None, overlap=None, rng_seed=0, now=0.0, tree_sizes=()):
    load = load or ActiveLoad(n)
    fn = (lambda r: list(overlap)) if overlap is not None else None
    return RoutingContext(list(range(n)), load, now, 64, random.Random(rng_seed), fn, tree_sizes)


# -- indexer --------------------------------------------------------------------------------------

def naive_depths(held: list[set[int]], hashes: list[int]) -> list[int]:
    out = []
    for blocks in held:
        d = 0
        for h in hashes:
            if h not in blocks:
                break
            d += 1
        out.append(d)
    return out


ops = st.lists(st.tuples(st.sampled_from(["stored", "removed"]), st.integers(0, 3),
                         st.lists(st.integers(0, 12), min_size=1, max_size=6)), max_size=40)


@given(ops, st.lists(st.integers(0, 12), max_size=8))
def test_indexer_matches_naive_per_worker_sets(events, query):
    idx = KvIndexer(4)
    held = [set() for _ in range(4)]
    for kind, w, hashes in events:
        idx.apply(w, KvEvent(KvEventKind(kind), tuple(hashes)))
        (held[w].update if kind == "stored" else held[w].difference_update)(hashes)
    scores = idx.find_matches(query)
    assert scores.depths == naive_depths(held, query)
    assert scores.tree_sizes == [len(h) for h in held]


def test_indexer_remove_worker_and_errors():
    idx = KvIndexer(2)
    idx.apply_stored(0, [1, 2, 3])
    idx.apply_stored(1, [1, 2])
    assert idx.depths([1, 2, 3]) == [3, 2]
    idx.remove_worker(0)
    assert idx.depths([1, 2, 3]) == [0, 2] and idx.tree_sizes == [0, 2]
    with pytest.raises(ValueError):
        idx.apply(0, KvEvent("bogus", (1,)))


def test_approx_indexer_ttl_and_prune():
    idx = ApproxIndexer(2, ttl_ms=1000.0, max_blocks=10, prune_ratio=0.5)
    idx.record(0, [1, 2, 3], now=0.0)
    idx.record(1, [1, 2], now=500.0)
    assert idx.depths_at([1, 2, 3], now=900.0) == [3, 2]
    assert idx.depths_at([1, 2, 3], now=1000.0) == [0, 2]  # worker 0's decision expired
    idx.record(0, [1, 2, 3], now=1200.0)  # re-routing refreshes
    assert idx.depths_at([1, 2, 3], now=1600.0) == [3, 0]
    idx.expire(1600.0)
    assert idx.tree_sizes == [3, 0]
    idx.record(1, list(range(100, 110)), now=1700.0)  # 13 > cap 10: prune to 5, earliest expiry first
    assert sum(idx.tree_sizes) == 5 and idx.tree_sizes[0] == 0
    # among equal expiry the deepest blocks go first: the shallow prefix survives
    assert idx.depths_at(list(range(100, 110)), now=1700.0)[1] == 5


# -- in-flight load ---------------------------------------------------------------------------------

def test_active_load_lifecycle():
    load = ActiveLoad(2)
    load.add(1, 0, [1, 2, 3], 192)
    load.add(2, 0, [1, 2, 4], 64)
    assert load.prefill_tokens == [256, 0] and load.distinct_blocks == [4, 0] and load.requests == [2, 0]
    assert load.active_depths([1, 2, 4, 9]) == [3, 0]
    load.prefill_done(1)
    load.prefill_done(1)  # idempotent
    assert load.prefill_tokens == [64, 0]
    load.free(2)
    assert load.distinct_blocks == [3, 0] and load.active_depths([1, 2, 4]) == [2, 0]
    load.free(1)
    assert load.distinct_blocks == [0, 0] and load.requests == [0, 0] and load.prefill_tokens == [0, 0]
    with pytest.raises(ValueError):
        load.add(3, 1, [1], 1)
        load.add(3, 1, [1], 1)


# -- policies ---------------------------------------------------------------------------------------

def test_kv_policy_logits_and_choice():
    load = ActiveLoad(3)
    load.add(10, 0, [1, 2, 3], 192)  # worker 0 busy prefilling the same prefix
    pol = make_policy("kv")
    r = mkreq(1, [1, 2, 3, 4], isl=260)  # q = 4 full blocks
    c = ctx(3, load, overlap=[0, 3, 0])
    # w0: (192+260)/64 - 0 + 3 + (4-3) ; w1: 260/64 - 3 + 0 + 4 ; w2: 260/64 + 0 + 4
    assert pol.logits(r, c) == [452 / 64 + 4, 260 / 64 - 3 + 4, 260 / 64 + 4]
    assert pol.select(r, c) == 1 and r.router_score == 260 / 64 + 1


def test_kv_policy_ties_tree_size_and_temperature():
    r = mkreq(1, [1])
    picks = {make_policy("kv").select(r, ctx(4, rng_seed=s)) for s in range(30)}
    assert picks == {0, 1, 2, 3}  # exact ties: uniform at random
    tb = make_policy("kv", tie_break="tree-size")
    assert all(tb.select(r, ctx(4, rng_seed=s, tree_sizes=[5, 2, 9, 2])) in (1, 3) for s in range(20))
    hot = make_policy("kv", temperature=0.5)
    load = ActiveLoad(2)
    load.add(9, 0, list(range(100, 140)), 4000)
    counts = [0, 0]
    for s in range(400):
        counts[hot.select(r, ctx(2, load, rng_seed=s))] += 1
    assert counts[1] > counts[0] > 0  # sampled, the cheaper worker more often
    with pytest.raises(ValueError):
        make_policy("kv", overlap_score_credit=1.5)


def test_softmax_and_argmin_helpers():
    rng = random.Random(1)
    assert argmin_random([3.0, 1.0, 2.0], [7, 8, 9], rng) == 8
    assert argmin_random([1.0, 1.0, 2.0], [7, 8, 9], rng, tiebreak=[5, 4, 0]) == 8
    assert softmax_sample([2.0, 2.0], [0, 1], 1.0, random.Random(3)) in (0, 1)


def test_load_policies():
    load = ActiveLoad(4)
    for rid, w in enumerate([0, 0, 1, 2, 2, 2]):
        load.add(rid, w, [rid], 0)
    r = mkreq(99, [1])
    assert make_policy("least-loaded").select(r, ctx(4, load)) == 3
    p2c = make_policy("power-of-two-choices")
    picks = [p2c.select(r, ctx(4, load, rng_seed=s)) for s in range(50)]
    assert 2 not in picks or picks.count(2) == 0  # the most loaded worker never wins a pair
    assert set(picks) <= {0, 1, 3} and len(set(picks)) > 1
    daw = make_policy("device-aware-weighted", device_types=["cuda", "cuda", "cuda", "cpu"])
    # accel in-flight 6, 1 cpu: allowed = 6*1 // (8*3) = 0 -> cpu gets nothing yet
    assert daw.select(r, ctx(4, load)) == 1
    for rid in range(100, 140):
        load.add(rid, 0, [rid], 0)
    # accel in-flight 46: allowed = 46 // 24 = 1 > cpu 0 -> overflow to the cpu worker
    assert daw.select(r, ctx(4, load)) == 3
    with pytest.raises(ValueError):
        make_policy("device-aware-weighted", device_types=["gpu"])


def test_direct_policy():
    pol = make_policy("direct")
    assert pol.select(mkreq(1, [1], hints={"worker_id": 2}), ctx(3)) == 2
    with pytest.raises(ValueError, match="no worker_id"):
        pol.select(mkreq(1, [1]), ctx(3))
    with pytest.raises(ValueError, match="names worker 7"):
        pol.select(mkreq(1, [1], hints={"backend_instance_id": 7}), ctx(3))


# -- queue ------------------------------------------------------------------------------------------

def test_queue_orders():
    a, b, c = mkreq(1, [1], priority=0), mkreq(2, [2], priority=2), mkreq(3, [3], priority=0)
    for policy, expect in (("fcfs", [2, 1, 3]), ("lcfs", [2, 3, 1]), ("wspt", [3, 2, 1])):
        q = RouterQueue(policy)
        q.push(a, 0.0, 5000)
        q.push(b, 1000.0, 5000)
        q.push(c, 2000.0, 100)
        assert [q.pop().rid for _ in range(3)] == expect, policy
    with pytest.raises(ValueError):
        RouterQueue("sjf")


def test_router_queues_when_all_busy_and_drains():
    router = Router("kv", 1, 64, queue_threshold=1.0, max_num_batched_tokens=8192)
    big = [mkreq(i, list(range(1000 * i, 1000 * i + 128))) for i in range(3)]
    assert router.route(big[0], 0.0) == 0
    assert router.route(big[1], 0.0) == 0  # pending 8192 is not > 8192
    assert router.route(big[2], 0.0) is None and len(router.queue) == 1
    released = router.on_first_token(big[0], 10.0)
    assert [(r.rid, w) for r, w in released] == [(2, 0)] and big[2].routed == 10.0


def test_kv_cost_options_of_the_disaggregated_routers():
    """Prefill router: no decode-blocks term; decode router: active blocks counted without deduplication."""
    from dynosim.router.router import Router

    def req(rid, hashes):
        from dynosim.request import Request
        return Request(rid, 32 * len(hashes), 4, tuple(hashes), list(hashes), 0.0)

    base = Router("kv", 2, 32, seed=0, kv_events=False, overlap_score_credit=0.0, prefill_load_scale=0.0)
    nodedup = Router("kv", 2, 32, seed=0, kv_events=False, overlap_score_credit=0.0, prefill_load_scale=0.0,
                     assume_kv_reuse=False)
    noblocks = Router("kv", 2, 32, seed=0, kv_events=False, track_active_blocks=False)
    for r in (base, nodedup, noblocks):
        r.load.add(0, 0, [1, 2, 3], 0)
        r.load.add(1, 0, [1, 2, 3], 0)   # the same three blocks again on worker 0
    probe = req(9, [1, 2, 3, 4])
    assert base.policy.logits(probe, base._context(0.0)) == [3 + 1, 4]       # distinct 3 + 1 new block
    assert nodedup.policy.logits(probe, nodedup._context(0.0)) == [6 + 4, 4]  # 6 held + all 4 of the probe
    assert noblocks.policy.logits(probe, noblocks._context(0.0)) == [4.0, 4.0]  # prefill term only: 128/32
