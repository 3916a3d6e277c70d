"""``Planner.tick`` on plain data: every rule that decides whether a replica target is acted on.

No engine, no simulator, no clock: a fake worker behind the capacity protocol,
pool states and traffic counters written by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.timing import FixedTiming
from dynosim.planner import (
    Observation,
    Planner,
    PlannerConfig,
    PoolSpec,
    PoolState,
    SloConfig,
    Traffic,
    WorkerCapacity,
)
from dynosim.planner.load import EngineLoad
from dynosim.planner.planner import (
    HELD_OBSERVING,
    HELD_STARTING,
    REFUSED_BUDGET,
    SCALE_DOWN,
    SCALE_UP,
    STEADY,
)
from dynosim.sim.capacity import MockerCapacity

MBT = 8192


@dataclass(frozen=True)
class FakeWorker:
    """100 ms per prefill pass of up to 8192 tokens, 10 ms per decode pass, 1M KV tokens, batch ≤ 256."""

    gpus: int = 1
    kv_tokens: int = 1_000_000
    max_num_seqs: int = 256
    max_num_batched_tokens: int = MBT

    def prefill_ms(self, new_tokens: float) -> float:
        return math.ceil(max(new_tokens, 1.0) / self.max_num_batched_tokens) * 100.0

    def decode_step_ms(self, batch: int, context: float) -> float:
        return 10.0


IDLE = EngineLoad(0, 0, 0, 0, 1_000_000)
LATE = EngineLoad(10 * MBT, 0, 0, 0, 1_000_000)                 # TTFT estimate 11 passes = 1.1 s > 500 ms
KV_FULL = EngineLoad(0, 900_000, 200_000, 100, 1_000_000)     # more KV demand than capacity
KV_BUSY = EngineLoad(0, 850_000, 0, 100, 1_000_000)           # fast steps, but no room to step down


def planner(**cfg) -> Planner:
    cfg = {"predictor": "constant", "load_min_observations": 1, **cfg}
    pools = {"prefill": PoolSpec("prefill", FakeWorker()), "decode": PoolSpec("decode", FakeWorker())}
    return Planner(PlannerConfig(**cfg), SloConfig(ttft_ms=500, itl_ms=50), pools)


def pool(ready: int, load: EngineLoad = IDLE, starting: int = 0, changes: int = 0) -> PoolState:
    return PoolState(starting, ready, changes, (load,) * ready)


def traffic(n: int, isl: int = 1000, osl: int = 100) -> Traffic:
    return Traffic(arrived=n, arrived_isl=n * isl, completed=n, completed_osl=n * osl)


def load_tick(p: Planner, t_s: float, prefill: PoolState, decode: PoolState, arrived: int = 100):
    return p.tick(Observation(t_s * 1000.0, "load", traffic(arrived)), {"prefill": prefill, "decode": decode})


def test_the_fakes_and_the_mocker_adapter_satisfy_the_capacity_protocol():
    assert isinstance(FakeWorker(), WorkerCapacity)
    m = MockerCapacity(MockerArgs(gpus_per_worker=2), FixedTiming(prefill=20.0, decode=5.0))
    assert isinstance(m, WorkerCapacity)
    assert (m.gpus, m.kv_tokens, m.max_num_seqs, m.max_num_batched_tokens) == (2, 16384 * 64, 256, 8192)
    assert m.prefill_ms(20000) == pytest.approx(60.0) and m.decode_step_ms(8, 1000.0) == pytest.approx(5.0)


def test_load_steps_up_and_down_with_reasons():
    d = load_tick(planner(), 5.0, pool(2, LATE), pool(2, IDLE))
    assert d.kind == "load" and d.time_s == 5.0
    assert (d.pools["prefill"].target, d.pools["prefill"].reason) == (3, SCALE_UP)
    assert (d.pools["decode"].target, d.pools["decode"].reason) == (1, SCALE_DOWN)
    assert d.changes() == {"prefill": 3, "decode": 1} and d.targets() == {"prefill": 3, "decode": 1}
    # nothing to do: the targets are the pools as they are
    d = load_tick(planner(), 5.0, pool(1, IDLE), pool(2, KV_BUSY))
    assert d.changes() == {} and {x.reason for x in d.pools.values()} == {STEADY}


def test_no_load_step_while_workers_start():
    d = load_tick(planner(), 5.0, pool(2, LATE, starting=1), pool(2, IDLE, starting=2))
    assert (d.pools["prefill"].current, d.pools["prefill"].target, d.pools["prefill"].reason) == (3, 3, HELD_STARTING)
    assert (d.pools["decode"].target, d.pools["decode"].reason) == (4, HELD_STARTING)
    assert d.changes() == {}


def test_load_min_observations_after_every_change():
    p = planner(load_min_observations=3)
    reasons = [load_tick(p, 5.0 * i, pool(2, LATE), pool(1, IDLE)).pools["prefill"].reason for i in (1, 2, 3)]
    assert reasons == [HELD_OBSERVING, HELD_OBSERVING, SCALE_UP]
    # the pool changed (scaled, or a worker became routable): observe it three ticks again
    reasons = [load_tick(p, 5.0 * i, pool(3, LATE, changes=2), pool(1, IDLE)).pools["prefill"].reason
               for i in (4, 5, 6)]
    assert reasons == [HELD_OBSERVING, HELD_OBSERVING, SCALE_UP]
    # the decode pool never changed: it was acted on (steady) from the third tick on
    assert load_tick(p, 35.0, pool(4, IDLE, changes=3), pool(1, IDLE)).pools["decode"].reason == STEADY


def test_a_step_up_the_budget_cannot_hold_is_refused():
    # 3 + 3 GPUs > 4: both steps up refused, the pools keep what they have
    d = load_tick(planner(max_gpu_budget=4), 5.0, pool(2, LATE), pool(2, KV_FULL))
    assert {k: (x.target, x.reason) for k, x in d.pools.items()} == {"prefill": (2, REFUSED_BUDGET),
                                                                     "decode": (2, REFUSED_BUDGET)}
    # 3 + 2 > 4: the step up is refused, the steady pool is steady
    d = load_tick(planner(max_gpu_budget=4), 5.0, pool(2, LATE), pool(2, KV_BUSY))
    assert (d.pools["prefill"].target, d.pools["prefill"].reason) == (2, REFUSED_BUDGET)
    assert d.pools["decode"].reason == STEADY
    # 3 + 1 fits: a step down elsewhere makes room in the same tick
    d = load_tick(planner(max_gpu_budget=4), 5.0, pool(2, LATE), pool(2, IDLE))
    assert d.changes() == {"prefill": 3, "decode": 1}


def test_throughput_tick_sizes_pools_and_sets_the_load_floor():
    """5400 requests in 180 s = 30/s; one prefill worker does 10 prompts/s (100 ms each) → 3; decode:
    256 requests per 100 tokens × 10 ms → 1."""
    p = planner()
    d = p.tick(Observation(180_000.0, "throughput", traffic(5400)), {"prefill": pool(1), "decode": pool(1)})
    assert d.kind == "throughput" and d.time_s == 180.0
    assert {k: (x.target, x.reason) for k, x in d.pools.items()} == {"prefill": (3, SCALE_UP),
                                                                     "decode": (1, STEADY)}
    assert p.decisions[-1].capacity_rps == {"prefill": pytest.approx(10.0), "decode": pytest.approx(256.0)}
    # with load scaling on, the throughput target is a lower bound: it never shrinks a pool by itself
    d = p.tick(Observation(360_000.0, "throughput", traffic(10_800)), {"prefill": pool(5), "decode": pool(1)})
    assert d.pools["prefill"].target == 5 and p.decisions[-1].targets["prefill"] == 3
    # and the load steps never go below it: idle prefill engines stay at 3
    d = load_tick(p, 365.0, pool(3, IDLE), pool(1, IDLE), arrived=10_800)
    assert (d.pools["prefill"].target, d.pools["prefill"].reason) == (3, STEADY)


def test_floors_min_replicas_and_one_worker():
    # throughput scaling alone: no traffic shrinks a pool to min_replicas
    p = planner(load_scaling=False, min_replicas=2)
    d = p.tick(Observation(180_000.0, "throughput", Traffic()), {"prefill": pool(4), "decode": pool(3)})
    assert d.targets() == {"prefill": 2, "decode": 2}
    # a budget that cannot even hold the minimum (refused up front by check_deployment) still leaves one worker
    p = planner(load_scaling=False, max_gpu_budget=1)
    d = p.tick(Observation(180_000.0, "throughput", traffic(5400)), {"prefill": pool(1), "decode": pool(1)})
    assert d.targets() == {"prefill": 1, "decode": 1}
    # a load step down stops at one worker per pool
    d = load_tick(planner(optimization_target="latency"), 5.0, pool(1, IDLE), pool(1, IDLE))
    assert d.targets() == {"prefill": 1, "decode": 1}


def test_a_step_down_needs_room_for_the_recent_rate():
    """Two idle prefill workers of 10 prompts/s; 9 requests/s recently: one at 80% holds 8/s → stay."""
    p = planner(throughput_scaling=None)
    load_tick(p, 5.0, pool(2), pool(1), arrived=0)
    d = load_tick(p, 10.0, pool(2), pool(1), arrived=45)               # 45 in 5 s = 9/s
    assert (d.pools["prefill"].target, d.pools["prefill"].reason) == (2, STEADY)
    p = planner(throughput_scaling=None)
    load_tick(p, 5.0, pool(2), pool(1), arrived=0)
    d = load_tick(p, 10.0, pool(2), pool(1), arrived=35)               # 7/s
    assert (d.pools["prefill"].target, d.pools["prefill"].reason) == (1, SCALE_DOWN)


def test_tick_refuses_unknown_pools_and_kinds():
    with pytest.raises(ValueError, match="not the planned"):
        planner().tick(Observation(0.0, "load", Traffic()), {"prefill": pool(1)})
    with pytest.raises(ValueError, match="unknown kind"):
        planner().tick(Observation(0.0, "sometimes", Traffic()), {"prefill": pool(1), "decode": pool(1)})
