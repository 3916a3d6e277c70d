"""The planner's decisions: throughput-based targets each throughput interval, ±1 load steps in between.

Throughput-based (``sla`` target): predict the next interval's request count,
ISL, OSL and prefix-hit rate, then size each pool from one worker's capacity
(``perf``): prefill from prompts/s at the effective ISL after hits, decode from
Little's law at the largest batch meeting the ITL objective, aggregated from
the best batch meeting both objectives. With load scaling on, these targets
are lower bounds that the ±1 load steps (``load.decide``) move above. Targets
always respect ``min_replicas``, ``max_replicas`` and the GPU budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.timing import TimingModel
from dynosim.planner.budget import fit_agg, fit_disagg
from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.planner.load import EngineLoad, decide
from dynosim.planner.perf import agg_capacity, decode_capacity, prefill_capacity, replicas_for
from dynosim.planner.predictors import make_predictor


@dataclass(frozen=True)
class PoolSpec:
    """One pool as the planner sees it: its role, engine, timing model and GPUs per worker."""

    role: str                 # "aggregated" | "prefill" | "decode"
    args: MockerArgs
    timing: TimingModel

    @property
    def gpus(self) -> int:
        return self.args.gpus_per_worker


@dataclass(frozen=True)
class Observation:
    """Traffic of one throughput interval, as the frontend saw it."""

    num_requests: float
    avg_isl: float
    avg_osl: float
    kv_hit_rate: float


@dataclass
class Decision:
    """Targets and what they were computed from (kept for the report)."""

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
        self.last: Observation | None = None
        self.lower: dict[str, int] = {name: cfg.min_replicas for name in pools}
        self.decisions: list[Decision] = []

    def _name(self, role: str) -> str:
        return next(n for n, p in self.pools.items() if p.role == role)

    def _cap(self, spec: PoolSpec) -> int:
        cap = self.cfg.max_gpu_budget // spec.gpus
        return min(cap, self.cfg.max_replicas) if self.cfg.max_replicas is not None else cap

    # -- throughput-based ----------------------------------------------------------------
    def observe(self, obs: Observation) -> None:
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
            return prefill_capacity(spec.timing, spec.args, isl_eff)
        if spec.role == "decode":
            return decode_capacity(spec.timing, spec.args, isl, osl, self.slo.itl_ms, self.cfg.max_kv_utilization)
        return agg_capacity(spec.timing, spec.args, isl_eff, isl, osl, self.slo.ttft_ms, self.slo.itl_ms,
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
        step = decide(spec.role, self.cfg.optimization_target, loads, spec.args, spec.timing,
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
