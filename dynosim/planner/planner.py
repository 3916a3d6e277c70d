"""The planner's decisions: throughput-based targets each throughput interval, ±1 load steps in between.

Throughput-based (``sla`` target): predict the next interval's request count,
ISL, OSL and prefix-hit rate, then size each pool from one worker's capacity
(``perf``): prefill from prompts/s at the effective ISL after hits, decode from
Little's law at the largest batch meeting the ITL objective, aggregated from
the best batch meeting both objectives. With load scaling on, these targets
are lower bounds that the ±1 load steps (``load.decide``) move above. Targets
always respect ``min_replicas``, ``max_replicas`` and the GPU budget.

Every rule that decides a replica target is here, behind ``Planner.tick``:
plain data in (``Observation``: the clock, the tick's kind and the frontend's
running traffic counters; one ``PoolState`` per pool: its counts, how often it
changed and its engines' loads), plain data out (``TickDecisions``: per pool
the target and the reason). The caller only observes and executes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dynosim.planner.budget import fit_agg, fit_disagg
from dynosim.planner.capacity import WorkerCapacity
from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.planner.load import EngineLoad, decide
from dynosim.planner.perf import agg_capacity, decode_capacity, prefill_capacity, replicas_for
from dynosim.planner.predictors import make_predictor

THROUGHPUT, LOAD = "throughput", "load"
# why a pool's target is what it is (``PoolDecision.reason``)
SCALE_UP, SCALE_DOWN, STEADY = "scale up", "scale down", "steady"
HELD_STARTING = "held: workers starting"
HELD_OBSERVING = "held: observing"           # fewer than load_min_observations load ticks since its last change
REFUSED_BUDGET = "refused: budget"


@dataclass(frozen=True)
class PoolSpec:
    """One pool as the planner sees it: its role and one worker's capacity (GPUs included)."""

    role: str                 # "aggregated" | "prefill" | "decode"
    worker: WorkerCapacity

    @property
    def gpus(self) -> int:
        return self.worker.gpus


@dataclass(frozen=True)
class IntervalStats:
    """Traffic of one throughput interval, as the frontend saw it (what the predictors are fed)."""

    num_requests: float
    avg_isl: float
    avg_osl: float
    kv_hit_rate: float


@dataclass
class Traffic:
    """The frontend's running totals since the start (the planner differences them per interval). The frontend
    counts into one; each tick's observation carries a copy of it."""

    arrived: int = 0
    arrived_isl: int = 0
    completed: int = 0
    completed_osl: int = 0
    prefilled: int = 0
    prefilled_isl: int = 0
    prefilled_reused: int = 0


@dataclass(frozen=True)
class Observation:
    """What the planner is told at a tick."""

    time_ms: float            # the clock (virtual or wall)
    kind: str                 # "throughput" | "load"
    traffic: Traffic


@dataclass(frozen=True)
class PoolState:
    """One pool now: replicas starting and routable, how many times it changed and its engines' loads."""

    starting: int
    ready: int
    changes: int = 0                          # scaling actions plus workers that became routable, ever
    loads: tuple[EngineLoad, ...] = ()        # one per routable engine (read at load ticks)

    @property
    def expected(self) -> int:
        """Replicas the pool is heading for: routable plus starting."""
        return self.starting + self.ready


@dataclass(frozen=True)
class PoolDecision:
    """A pool's target after a tick and why."""

    current: int
    target: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.target != self.current


@dataclass(frozen=True)
class TickDecisions:
    """The outcome of one tick: per pool, its target and the reason."""

    time_s: float
    kind: str                         # "throughput" | "load"
    pools: dict[str, PoolDecision]

    def targets(self) -> dict[str, int]:
        return {k: d.target for k, d in self.pools.items()}

    def changes(self) -> dict[str, int]:
        """Only the pools whose target differs from what they are heading for."""
        return {k: d.target for k, d in self.pools.items() if d.changed}


@dataclass
class Decision:
    """Throughput targets and what they were computed from (kept for the report)."""

    time_s: float
    kind: str                         # "throughput" | "load"
    targets: dict[str, int]
    predicted: dict[str, float] = field(default_factory=dict)
    capacity_rps: dict[str, float] = field(default_factory=dict)


class Planner:
    def __init__(self, cfg: PlannerConfig, slo: SloConfig, pools: dict[str, PoolSpec]):
        roles = sorted(p.role for p in pools.values())
        if roles not in (["aggregated"], ["decode", "prefill"]):
            raise ValueError(f"planner: pools must be one aggregated pool or prefill + decode, got {roles}")
        self.cfg = cfg
        self.slo = slo
        self.pools = pools
        self.disagg = "prefill" in roles
        self._pred = {k: make_predictor(cfg.predictor) for k in ("num_requests", "isl", "osl", "kv_hit")}
        self.last: IntervalStats | None = None
        self.lower: dict[str, int] = {name: cfg.min_replicas for name in pools}
        self.decisions: list[Decision] = []
        self._window = Traffic()              # the counters at the start of the current throughput interval
        # arrivals counted at the last load ticks: the recent request rate a step down must fit
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=cfg.load_min_observations + 1)
        self._observed: dict[str, int] = {name: 0 for name in pools}   # load ticks since the pool last changed
        self._seen_changes: dict[str, int] = {name: 0 for name in pools}

    def _name(self, role: str) -> str:
        return next(n for n, p in self.pools.items() if p.role == role)

    def _cap(self, spec: PoolSpec) -> int:
        cap = self.cfg.max_gpu_budget // spec.gpus
        return min(cap, self.cfg.max_replicas) if self.cfg.max_replicas is not None else cap

    # -- throughput-based ----------------------------------------------------------------
    def observe(self, obs: IntervalStats) -> None:
        """Feed one finished interval to the predictors."""
        self.last = obs
        self._pred["num_requests"].add(obs.num_requests)
        self._pred["isl"].add(obs.avg_isl)
        self._pred["osl"].add(obs.avg_osl)
        self._pred["kv_hit"].add(obs.kv_hit_rate)

    def predict(self) -> dict[str, float]:
        p = {k: float(v.predict()) for k, v in self._pred.items()}
        p["kv_hit"] = min(max(p["kv_hit"], 0.0), self.cfg.max_kv_hit_rate)
        return p

    def throughput_targets(self, now_s: float) -> dict[str, int]:
        """Replicas per pool for the predicted demand of the next interval (also the load steps' floors)."""
        pred = self.predict()
        demand = pred["num_requests"] / self.cfg.throughput_interval_s
        isl, osl, hit = pred["isl"], pred["osl"], pred["kv_hit"]
        lo = self.cfg.min_replicas
        caps: dict[str, float] = {}
        targets: dict[str, int] = {}
        for name, spec in self.pools.items():
            c = self.capacity(name, isl, osl, hit)
            caps[name] = c.rps
            targets[name] = min(replicas_for(demand, c, lo), self._cap(spec))
        targets = self.fit_budget(targets)
        self.lower = dict(targets)
        self.decisions.append(Decision(now_s, "throughput", dict(targets), pred, caps))
        return targets

    # -- load-based ------------------------------------------------------------------------
    def capacity(self, name: str, isl: float, osl: float, kv_hit: float):
        """One worker's sustainable request rate in pool ``name`` for this traffic shape."""
        spec = self.pools[name]
        isl, osl = max(isl, 1.0), max(osl, 1.0)
        isl_eff = isl * (1.0 - min(max(kv_hit, 0.0), self.cfg.max_kv_hit_rate))
        if spec.role == "prefill":
            return prefill_capacity(spec.worker, isl_eff)
        if spec.role == "decode":
            return decode_capacity(spec.worker, isl, osl, self.slo.itl_ms, self.cfg.max_kv_utilization)
        return agg_capacity(spec.worker, isl_eff, isl, osl, self.slo.ttft_ms, self.slo.itl_ms,
                            self.cfg.max_kv_utilization)

    def load_target(self, name: str, current: int, loads: list[EngineLoad], *, avg_isl: float, avg_osl: float,
                    kv_hit: float, recent_rps: float | None = None) -> int:
        """``current`` moved by at most one replica, never below the throughput floor.

        A step down also needs the recent request rate (``recent_rps``, when
        known) to fit in one worker fewer at ``load_down_sensitivity`` of their
        capacity: an engine's queue is empty between bursts even when the pool
        is busy, so the queue alone would remove workers the traffic needs.
        """
        spec = self.pools[name]
        step = decide(spec.role, self.cfg.optimization_target, loads, spec.worker,
                      ttft_ms=self.slo.ttft_ms, itl_ms=self.slo.itl_ms, avg_isl=avg_isl,
                      avg_ctx=avg_isl + avg_osl / 2.0, kv_hit=min(kv_hit, self.cfg.max_kv_hit_rate),
                      down_sensitivity=self.cfg.load_down_sensitivity)
        if step < 0 and recent_rps is not None and avg_isl > 0:
            cap = self.capacity(name, avg_isl, avg_osl, kv_hit)
            if recent_rps > (current - 1) * cap.rps * self.cfg.load_down_sensitivity:
                step = 0
        floor = max(self.cfg.min_replicas, self.lower.get(name, 0) if self.cfg.uses_throughput_scaling else 0)
        return max(floor, min(current + step, self._cap(spec)))

    def fit_budget(self, targets: dict[str, int]) -> dict[str, int]:
        """Targets shrunk to the GPU budget (prefill and decode in proportion)."""
        b, lo = self.cfg.max_gpu_budget, self.cfg.min_replicas
        if self.disagg:
            pn, dn = self._name("prefill"), self._name("decode")
            p, d = fit_disagg(targets[pn], targets[dn], self.pools[pn].gpus, self.pools[dn].gpus, b, lo)
            return {pn: p, dn: d}
        (name,) = targets
        return {name: fit_agg(targets[name], self.pools[name].gpus, b, lo)}

    def check_deployment(self, replicas: dict[str, int]) -> None:
        """A clear error when the starting deployment or the minimum cannot live within the budget."""
        need = sum(self.cfg.min_replicas * s.gpus for s in self.pools.values())
        if need > self.cfg.max_gpu_budget:
            raise ValueError(f"planner.max_gpu_budget={self.cfg.max_gpu_budget} GPUs cannot hold min_replicas="
                             f"{self.cfg.min_replicas} per pool ({need} GPUs)")
        used = sum(replicas[n] * s.gpus for n, s in self.pools.items())
        if used > self.cfg.max_gpu_budget:
            raise ValueError(f"the starting deployment uses {used} GPUs, more than planner.max_gpu_budget="
                             f"{self.cfg.max_gpu_budget}")

    # -- the tick: every rule that decides whether a target is acted on ---------------------------
    def tick(self, obs: Observation, pools: dict[str, PoolState]) -> TickDecisions:
        """One throughput or load tick: per pool, the replicas it should head for and why.

        Plain data in and out; the caller applies every target that differs from
        ``PoolState.expected`` (shrinking pools first) and ticks again later.
        """
        if set(pools) != set(self.pools):
            raise ValueError(f"planner.tick: pools {sorted(pools)} are not the planned {sorted(self.pools)}")
        if obs.kind == THROUGHPUT:
            out = self._throughput_tick(obs, pools)
        elif obs.kind == LOAD:
            out = self._load_tick(obs, pools)
        else:
            raise ValueError(f"planner.tick: unknown kind {obs.kind!r}")
        return TickDecisions(obs.time_ms / 1000.0, obs.kind, out)

    @staticmethod
    def _step(current: int, target: int, held: str | None = None) -> PoolDecision:
        if held is not None:
            return PoolDecision(current, current, held)
        target = max(target, 1)               # a pool never goes below one worker
        reason = SCALE_UP if target > current else SCALE_DOWN if target < current else STEADY
        return PoolDecision(current, target, reason)

    def _interval(self, c: Traffic) -> IntervalStats:
        """The throughput interval that just ended; averages of an empty window repeat the previous one."""
        w = self._window
        n = c.arrived - w.arrived
        done = c.completed - w.completed
        pre = c.prefilled - w.prefilled
        prev = self.last
        return IntervalStats(
            num_requests=float(n),
            avg_isl=(c.arrived_isl - w.arrived_isl) / n if n else (prev.avg_isl if prev else 0.0),
            avg_osl=(c.completed_osl - w.completed_osl) / done if done else (prev.avg_osl if prev else 0.0),
            kv_hit_rate=((c.prefilled_reused - w.prefilled_reused) / (c.prefilled_isl - w.prefilled_isl)
                         if pre and c.prefilled_isl > w.prefilled_isl else (prev.kv_hit_rate if prev else 0.0)))

    def _throughput_tick(self, obs: Observation, pools: dict[str, PoolState]) -> dict[str, PoolDecision]:
        stats = self._interval(obs.traffic)
        self._window = obs.traffic
        self.observe(stats)
        targets = self.throughput_targets(obs.time_ms / 1000.0)
        if self.cfg.load_scaling:      # a lower bound for the load steps, within the budget
            targets = self.fit_budget({name: max(targets[name], pools[name].expected) for name in self.pools})
        return {name: self._step(pools[name].expected, targets[name]) for name in self.pools}

    def _traffic_so_far(self, c: Traffic) -> tuple[float, float, float]:
        """Average ISL, OSL and prefix-hit rate of the last throughput interval (else of everything seen)."""
        if self.last is not None:
            o = self.last
            return o.avg_isl, o.avg_osl, o.kv_hit_rate
        isl = c.arrived_isl / c.arrived if c.arrived else 0.0
        osl = c.completed_osl / c.completed if c.completed else 0.0
        hit = c.prefilled_reused / c.prefilled_isl if c.prefilled_isl else 0.0
        return isl, osl, hit

    def _load_tick(self, obs: Observation, pools: dict[str, PoolState]) -> dict[str, PoolDecision]:
        isl, osl, hit = self._traffic_so_far(obs.traffic)
        self._arrivals.append((obs.time_ms, obs.traffic.arrived))
        (t_a, n_a), (t_b, n_b) = self._arrivals[0], self._arrivals[-1]
        recent = (n_b - n_a) / ((t_b - t_a) / 1000.0) if t_b > t_a else None
        for name, st in pools.items():
            if st.changes != self._seen_changes[name]:       # scaled, or a worker became routable
                self._seen_changes[name] = st.changes
                self._observed[name] = 0
            self._observed[name] += 1
        # no new action on a pool while some of its workers are still starting, nor before it was observed
        # for load_min_observations ticks since its last change
        wait = self.cfg.load_min_observations
        out: dict[str, PoolDecision] = {}
        for name in self.pools:
            st = pools[name]
            cur = st.expected
            if st.starting:
                out[name] = self._step(cur, cur, HELD_STARTING)
            elif self._observed[name] < wait:
                out[name] = self._step(cur, cur, HELD_OBSERVING)
            else:
                out[name] = self._step(cur, self.load_target(name, cur, list(st.loads), avg_isl=isl, avg_osl=osl,
                                                             kv_hit=hit, recent_rps=recent))
        # a step up that would break the GPU budget is refused
        proposed = {name: d.target for name, d in out.items()}
        if self.fit_budget(proposed) != proposed:
            out = {name: d if d.target <= d.current else PoolDecision(d.current, d.current, REFUSED_BUDGET)
                   for name, d in out.items()}
        return out
