"""The planner: predicts load and decides every pool's replica target, in virtual (or wall) time.

What it owns: every rule that decides a replica target — the predictors, the
throughput-based sizing (``perf``), the ±1 load steps (``load``), the GPU
budget (``budget``) and the gates around them (no load step while a pool's
workers start, ``load_min_observations`` ticks after a change, a step up the
budget cannot hold is refused, never below one worker). All of it sits behind
``Planner.tick(Observation, {pool: PoolState}) -> TickDecisions``: plain
dataclasses in, per pool the target and the reason out. The caller observes
(engine loads, traffic counters, pool counts) and executes (starts and drains
workers); in the simulator that is ``dynosim.sim.scaling``.

What it sees of a worker is the capacity protocol ``capacity.WorkerCapacity``
(GPUs, KV tokens, max batch, pass times), which the caller adapts its engine
to (``dynosim.sim.capacity`` for the mocker).

What it may import: the standard library, numpy/statsmodels (predictors),
pydantic (config) and itself. Nothing from ``dynosim.engines``, ``dynosim.sim``,
simpy or aiohttp (``tests/test_house_rules.py`` enforces it), so a live
deployment can tick the same object on the wall clock.
"""

from dynosim.planner.capacity import WorkerCapacity
from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.planner.planner import (
    Observation,
    Planner,
    PoolDecision,
    PoolSpec,
    PoolState,
    TickDecisions,
    Traffic,
)

__all__ = ["Observation", "Planner", "PlannerConfig", "PoolDecision", "PoolSpec", "PoolState", "SloConfig",
           "TickDecisions", "Traffic", "WorkerCapacity"]
