"""The planner's pure parts: predictors, per-worker capacity, GPU budget, load decisions per mode."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.timing import FixedTiming, PolynomialTiming
from dynosim.planner import Planner, PlannerConfig, PoolSpec, SloConfig
from dynosim.planner.budget import fit_agg, fit_disagg
from dynosim.planner.load import EngineLoad, decide
from dynosim.planner.perf import agg_capacity, decode_capacity, max_batch, prefill_capacity, replicas_for
from dynosim.planner.planner import IntervalStats
from dynosim.planner.predictors import PREDICTORS, make_predictor
from dynosim.sim.capacity import MockerCapacity

ARGS = MockerArgs()


def W(timing, args=ARGS) -> MockerCapacity:
    """One mocker worker behind the planner's capacity protocol."""
    return MockerCapacity(args, timing)


def prefill_ms(timing, args, new_tokens):
    return W(timing, args).prefill_ms(new_tokens)


def decode_step_ms(timing, args, batch, context):
    return W(timing, args).decode_step_ms(batch, context)


# ---------------------------------------------------------------------------- predictors


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_predictors_skip_leading_idle_and_never_go_negative(name):
    p = make_predictor(name)
    assert p.predict() == 0.0
    for v in (0, 0, float("nan")):
        p.add(v)
    assert p.values == [] and p.predict() == 0.0
    p.add(7.0)
    assert p.predict() == 7.0                        # one point: the last value
    for v in (7.0,) * 8:
        p.add(v)
    assert p.predict() == pytest.approx(7.0, abs=1e-6)   # a constant series: that value
    for v in (5.0, 3.0, 1.0, 0.0, 0.0, 0.0):
        p.add(v)
    assert p.predict() >= 0.0


def test_constant_and_moving_average():
    c, m = make_predictor("constant"), make_predictor("moving-average")
    for v in (3, 6, 9):
        c.add(v)
        m.add(v)
    assert c.predict() == 9 and m.predict() == 6


@pytest.mark.parametrize("name,tol", [("kalman", 1.5), ("arima", 1.0)])
def test_trend_following_predictors_extrapolate_a_line(name, tol):
    """A steady ramp: the trend models predict the next value; the last value would lag by one step (2)."""
    p = make_predictor(name)
    for i in range(20):
        p.add(10.0 + 2.0 * i)
    assert p.predict() == pytest.approx(50.0, abs=tol)
    assert abs(make_predictor("constant").predict() - 50.0) > tol


def test_unknown_predictor():
    with pytest.raises(ValueError, match="unknown load predictor"):
        make_predictor("prophet")
    with pytest.raises(ValidationError, match="planner.predictor"):
        PlannerConfig(predictor="prophet")


def test_planner_config_validation():
    assert PlannerConfig().uses_throughput_scaling
    assert not PlannerConfig(optimization_target="latency").uses_throughput_scaling
    with pytest.raises(ValidationError, match="needs optimization_target 'sla'"):
        PlannerConfig(optimization_target="throughput", throughput_scaling=True)
    with pytest.raises(ValidationError, match="nothing would scale"):
        PlannerConfig(optimization_target="throughput", load_scaling=False)
    with pytest.raises(ValidationError, match="below throughput_interval_s"):
        PlannerConfig(load_interval_s=200)
    with pytest.raises(ValidationError, match="below min_replicas"):
        PlannerConfig(min_replicas=3, max_replicas=2)


# ---------------------------------------------------------------------------- capacity


def test_prefill_capacity_by_hand():
    t = FixedTiming(prefill=20.0, decode=5.0)
    assert prefill_capacity(W(t, ARGS), 1000).rps == pytest.approx(50.0)
    # a prompt longer than one pass is prefilled in budget-sized chunks: 20000 tokens = 3 passes of ≤ 8192
    assert prefill_ms(t, ARGS, 20000) == pytest.approx(60.0)
    poly = PolynomialTiming()
    assert prefill_ms(poly, ARGS, 16384) == pytest.approx(2 * poly.prefill_ms(1, 8192, 0))
    fast = MockerArgs(speedup_ratio=2.0)
    assert prefill_capacity(W(t, fast), 1000).rps == pytest.approx(100.0)


def test_decode_capacity_is_littles_law_at_the_largest_batch_meeting_itl():
    poly = PolynomialTiming()
    isl, osl, itl = 4096, 200, 12.0
    cap = decode_capacity(W(poly), isl, osl, itl)
    ctx = isl + osl / 2
    assert cap.meets_slo and 1 <= cap.batch <= max_batch(W(poly), ctx)
    assert decode_step_ms(poly, ARGS, cap.batch, ctx) <= itl
    if cap.batch < max_batch(W(poly), ctx):
        assert decode_step_ms(poly, ARGS, cap.batch + 1, ctx) > itl
    assert cap.rps == pytest.approx(cap.batch / (osl * decode_step_ms(poly, ARGS, cap.batch, ctx) / 1000))
    # constant 5 ms steps: the KV cache bounds the batch (16384 blocks × 64 tokens / 4196 tokens = 249)
    fixed = decode_capacity(W(FixedTiming(decode=5.0)), isl, osl, 50.0)
    assert fixed.batch == 16384 * 64 // 4196 == 249 and fixed.rps == pytest.approx(249 / (200 * 0.005))
    # headroom: the mean batch fills at most 80% of the cache
    assert decode_capacity(W(FixedTiming(decode=5.0)), isl, osl, 50.0, kv_utilization=0.8).batch == \
        int(16384 * 64 * 0.8 // 4196) == 199
    # no batch meets the ITL: one request per worker, flagged
    slow = decode_capacity(W(FixedTiming(decode=80.0)), isl, osl, 50.0)
    assert not slow.meets_slo and slow.batch == 1


def test_agg_capacity_meets_both_objectives():
    poly = PolynomialTiming()
    cap = agg_capacity(W(poly), 4096, 4096, 64, 500.0, 50.0)
    assert cap.meets_slo and cap.batch > 1 and cap.rps > 0
    tight = agg_capacity(W(poly), 4096, 4096, 64, 500.0, 20.0)
    assert tight.rps < cap.rps                        # a tighter ITL allows a smaller batch
    impossible = agg_capacity(W(poly), 4096, 4096, 64, 1.0, 50.0)
    assert not impossible.meets_slo and impossible.batch == 1


def test_replicas_for():
    from dynosim.planner.perf import Capacity

    assert replicas_for(10.0, Capacity(3.0, 1, True), 1) == 4
    assert replicas_for(9.0, Capacity(3.0, 1, True), 1) == 3
    assert replicas_for(0.0, Capacity(3.0, 1, True), 2) == 2
    assert replicas_for(5.0, Capacity(math.inf, 1, True), 1) == 1


# ---------------------------------------------------------------------------- budget


def test_gpu_budget_by_hand():
    assert fit_disagg(4, 12, 1, 1, 16, 1) == (4, 12)                 # fits
    # 8p + 24d on 16 GPUs: s = 0.5 → p = min(15, 4) = 4, d = 12
    assert fit_disagg(8, 24, 1, 1, 16, 1) == (4, 12)
    # TP2 prefill: 6·2 + 10 = 22 > 16, s = 16/22 → p = min((16-1)//2 = 7, floor(4.36) = 4) = 4, d = 16 - 8 = 8
    assert fit_disagg(6, 10, 2, 1, 16, 1) == (4, 8)
    assert fit_disagg(3, 3, 4, 4, 4, 1) == (0, 0)                    # not even the minimum fits
    assert fit_agg(20, 2, 16, 1) == 8 and fit_agg(3, 2, 16, 1) == 3 and fit_agg(3, 4, 3, 1) == 0


# ---------------------------------------------------------------------------- load decisions


def _load(queued_prefill=0, sched_kv=0, queued_kv=0, n_decode=0, max_kv=1_000_000):
    return EngineLoad(queued_prefill, sched_kv, queued_kv, n_decode, max_kv)


def _decide(role, target, loads, timing=None, **kw):
    return decide(role, target, loads, W(timing or PolynomialTiming()), ttft_ms=kw.get("ttft", 500.0),
                  itl_ms=kw.get("itl", 50.0), avg_isl=kw.get("isl", 4096.0), avg_ctx=kw.get("ctx", 4200.0),
                  kv_hit=kw.get("hit", 0.0))


def test_load_decisions_throughput_and_latency_targets():
    mbt = ARGS.max_num_batched_tokens
    # prefill by queued passes: throughput up at r >= 1 on any engine, down when all r < 0.1
    assert _decide("prefill", "throughput", [_load(mbt), _load(0)]) == 1
    assert _decide("prefill", "throughput", [_load(mbt // 2), _load(0)]) == 0
    assert _decide("prefill", "throughput", [_load(100), _load(0)]) == -1
    assert _decide("prefill", "throughput", [_load(0)]) == 0          # never below one worker
    # latency: up at r >= 0.1, down only when nothing is queued anywhere
    assert _decide("prefill", "latency", [_load(mbt // 5), _load(0)]) == 1
    assert _decide("prefill", "latency", [_load(100), _load(0)]) == 0
    assert _decide("prefill", "latency", [_load(0), _load(0)]) == -1
    # decode and aggregated engines by KV demand
    assert _decide("decode", "throughput", [_load(sched_kv=900_000, queued_kv=200_000), _load()]) == 1
    assert _decide("decode", "throughput", [_load(sched_kv=700_000), _load()]) == 0
    assert _decide("aggregated", "throughput", [_load(sched_kv=500_000), _load(sched_kv=100)]) == -1
    assert _decide("decode", "latency", [_load(sched_kv=500_000), _load()]) == 1
    assert _decide("decode", "latency", [_load(sched_kv=200_000), _load()]) == 0
    assert _decide("decode", "latency", [_load(sched_kv=50_000), _load()]) == -1


def test_load_decisions_sla_target():
    fixed = FixedTiming(prefill=100.0, decode=30.0)
    mbt = ARGS.max_num_batched_tokens
    # TTFT estimate = passes of (queued + one prompt) × 100 ms: 6 passes = 600 ms > 500 on both → up
    both_late = [_load(5 * mbt), _load(5 * mbt + 10)]
    assert _decide("prefill", "sla", both_late, fixed, isl=100) == 1
    # one engine on time: no step (up needs every engine late)
    assert _decide("prefill", "sla", [_load(5 * mbt), _load(0)], fixed, isl=100) == 0
    # all well below 0.8 × SLO: down
    assert _decide("prefill", "sla", [_load(0), _load(0)], fixed, isl=100) == -1
    # decode: 30 ms steps meet a 50 ms ITL comfortably (< 40) → down; a 35 ms objective is missed → up
    assert _decide("decode", "sla", [_load(), _load()], fixed) == -1
    assert _decide("decode", "sla", [_load(), _load()], fixed, itl=35.0) == 0
    assert _decide("decode", "sla", [_load(), _load()], fixed, itl=25.0) == 1
    # every decode engine has more KV demand than capacity (requests wait for blocks): up, although steps are fast
    full = [_load(sched_kv=900_000, queued_kv=200_000), _load(sched_kv=950_000, queued_kv=100_000)]
    assert _decide("decode", "sla", full, fixed) == 1 and _decide("aggregated", "sla", full, fixed, isl=100) == 1
    assert _decide("decode", "sla", [full[0], _load()], fixed) == 0          # one has room: no step down either
    # fast steps but a KV cache above 0.8 × capacity: no step down
    busy = [_load(sched_kv=850_000), _load(sched_kv=850_000)]
    assert _decide("decode", "sla", busy, fixed) == 0 and _decide("aggregated", "sla", busy, fixed, isl=100) == 0
    # aggregated: up if all miss either objective, down only if both are comfortable
    assert _decide("aggregated", "sla", [_load(), _load()], fixed, itl=25.0, isl=100) == 1
    assert _decide("aggregated", "sla", [_load(), _load()], fixed, isl=100) == -1
    assert _decide("aggregated", "sla", [_load(), _load()], fixed, itl=35.0, isl=100) == 0


# ---------------------------------------------------------------------------- the planner


def _planner(**cfg):
    pools = {"prefill": PoolSpec("prefill", W(FixedTiming(prefill=100.0, decode=10.0), ARGS)),
             "decode": PoolSpec("decode", W(FixedTiming(prefill=100.0, decode=10.0), ARGS))}
    return Planner(PlannerConfig(predictor="constant", **cfg), SloConfig(ttft_ms=500, itl_ms=50), pools)


def test_throughput_targets_by_hand():
    """Prefill: 100 ms per prompt = 10 prompts/s per worker; 5400 requests in 180 s = 30/s → 3 workers.
    Decode: 10 ms steps meet the ITL at the KV-bound batch 16384·64/(1000+50) = 998 → capped at
    max_num_seqs 256; 256 / (100 tokens × 10 ms) = 256 requests/s → 1 worker."""
    p = _planner(max_gpu_budget=16)
    p.observe(IntervalStats(num_requests=5400, avg_isl=1000, avg_osl=100, kv_hit_rate=0.0))
    assert p.throughput_targets(180.0) == {"prefill": 3, "decode": 1}
    d = p.decisions[-1]
    assert d.capacity_rps["prefill"] == pytest.approx(10.0) and d.capacity_rps["decode"] == pytest.approx(256.0)
    # the load steps never go below these floors, and move one replica at a time
    assert p.load_target("prefill", 3, [_load(0), _load(0), _load(0)], avg_isl=1000, avg_osl=100, kv_hit=0) == 3
    assert p.load_target("decode", 1, [_load()], avg_isl=1000, avg_osl=100, kv_hit=0) == 1
    late = [_load(10 * ARGS.max_num_batched_tokens)] * 3
    assert p.load_target("prefill", 3, late, avg_isl=1000, avg_osl=100, kv_hit=0) == 4


def test_throughput_targets_respect_budget_and_caps():
    p = _planner(max_gpu_budget=6)
    p.observe(IntervalStats(num_requests=180 * 80, avg_isl=1000, avg_osl=100, kv_hit_rate=0.0))
    t = p.throughput_targets(180.0)                  # 8 prefill + 1 decode do not fit in 6 GPUs
    assert t["prefill"] + t["decode"] <= 6 and t["decode"] >= 1
    q = _planner(max_gpu_budget=64, max_replicas=5)
    q.observe(IntervalStats(num_requests=180 * 80, avg_isl=1000, avg_osl=100, kv_hit_rate=0.0))
    assert q.throughput_targets(180.0)["prefill"] == 5


def test_prefix_hits_shrink_the_prefill_pool():
    p = _planner(max_gpu_budget=64)
    p.observe(IntervalStats(num_requests=180 * 30, avg_isl=20000, avg_osl=100, kv_hit_rate=0.0))
    cold = p.throughput_targets(180.0)["prefill"]    # 3 passes of 100 ms per prompt: 3.33/s → 9
    p.observe(IntervalStats(num_requests=180 * 30, avg_isl=20000, avg_osl=100, kv_hit_rate=0.9))
    warm = p.throughput_targets(360.0)["prefill"]    # 2000 new tokens: 1 pass → 3
    assert (cold, warm) == (9, 3)


def test_step_down_needs_room_for_the_recent_rate():
    p = _planner(max_gpu_budget=16, throughput_scaling=None)
    idle = [_load(0), _load(0)]
    # 10 prompts/s per prefill worker; 9/s recent: one worker at 80% holds 8/s → stay at 2
    assert p.load_target("prefill", 2, idle, avg_isl=1000, avg_osl=100, kv_hit=0, recent_rps=9.0) == 2
    assert p.load_target("prefill", 2, idle, avg_isl=1000, avg_osl=100, kv_hit=0, recent_rps=7.0) == 1


def test_deployment_must_fit_the_budget():
    p = _planner(max_gpu_budget=4)
    with pytest.raises(ValueError, match="more than planner.max_gpu_budget=4"):
        p.check_deployment({"prefill": 2, "decode": 3})
    p.check_deployment({"prefill": 2, "decode": 2})
    tp4 = MockerArgs(gpus_per_worker=4)
    q = Planner(PlannerConfig(max_gpu_budget=6), SloConfig(), {"prefill": PoolSpec("prefill", W(FixedTiming(), tp4)),
                                                              "decode": PoolSpec("decode", W(FixedTiming(), tp4))})
    with pytest.raises(ValueError, match="cannot hold min_replicas"):
        q.check_deployment({"prefill": 1, "decode": 1})
    with pytest.raises(ValueError, match="one aggregated pool or prefill"):
        Planner(PlannerConfig(), SloConfig(), {"a": PoolSpec("prefill", W(FixedTiming(), ARGS))})
