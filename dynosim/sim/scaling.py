"""The planner in the simulator's loop: observes, ticks the planner in virtual time, executes its targets.

This module decides nothing: at each tick it reads what a live deployment
would report (engine loads, the frontend's traffic counters, the pools'
counts), hands it to ``Planner.tick`` and applies the targets it returns. Every
rule about whether a target is acted on lives in ``dynosim.planner``.

Scale-up: a new worker holds its GPUs from the decision and becomes routable
``startup_time_s`` later. Scale-down: first cancels workers still starting,
then takes the most recently started routable worker out of the router at
once; it finishes what it holds (drains) and releases its GPUs when idle. A
retired slot comes back, when needed again, as a fresh engine with an empty
cache. Every change is a row of the replica timeline.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from dynosim.config import RunConfig
from dynosim.deploy.assembly import Pool
from dynosim.planner.load import EngineLoad
from dynosim.planner.planner import LOAD, THROUGHPUT, Observation, Planner, PoolSpec, PoolState
from dynosim.sim.capacity import MockerCapacity
from dynosim.clock import PRIO_ARRIVAL, Clock
from dynosim.sim.worker import Worker

OFF, STARTING, READY, DRAINING = "off", "starting", "ready", "draining"
TIMELINE_COLUMNS = ["time_s", "pool", "target", "starting", "ready", "draining", "gpus", "reason"]


def engine_load(worker: Worker) -> EngineLoad:
    """What an engine reports to the planner: its queue and KV demand now."""
    s = worker.sched
    queued_prefill = 0
    queued_kv = 0
    for r in s.waiting:
        queued_prefill += max(0, r.isl - r.computed)
        queued_kv += r.isl + r.generated
    n_decode = 0
    for r in s.running:
        if r.computed < r.isl:
            queued_prefill += r.isl - r.computed
        else:
            n_decode += 1
    return EngineLoad(queued_prefill, s.kv.num_active * s.bs, queued_kv, n_decode, s.total_kv_tokens)


class ScaledPool:
    """A pool's worker slots and their states; applies replica targets on the clock."""

    def __init__(self, handle: Pool, gpus_per_worker: int, clock: Clock, startup_ms: float, record,
                 retired: list[Worker]):
        self.h = handle
        self.gpus_per_worker = gpus_per_worker
        self.clock = clock
        self.startup_ms = startup_ms
        self.record = record
        self.retired = retired
        self.state: list[str] = [READY] * len(handle.workers)
        self.ready_order: list[int] = list(range(len(handle.workers)))   # routable, oldest first
        self.starting_order: list[int] = []
        self._gen: list[int] = [0] * len(handle.workers)
        self.ups = self.downs = 0
        self.changes = 0           # scaling actions plus workers that became routable (the planner's gate)
        for w in handle.workers:
            w.on_idle = self._on_idle

    @property
    def name(self) -> str:
        return self.h.name

    def count(self, state: str) -> int:
        return sum(1 for s in self.state if s == state)

    @property
    def expected(self) -> int:
        """Replicas the pool is heading for: routable plus starting."""
        return len(self.ready_order) + len(self.starting_order)

    @property
    def gpus(self) -> int:
        busy = sum(1 for s in self.state if s != OFF)
        return busy * self.gpus_per_worker

    def loads(self) -> list[EngineLoad]:
        return [engine_load(self.h.workers[w]) for w in self.ready_order]

    def observe(self, with_loads: bool) -> PoolState:
        """What the planner is told of this pool (its engines' loads only when it asks for them)."""
        return PoolState(len(self.starting_order), len(self.ready_order), self.changes,
                         tuple(self.loads()) if with_loads else ())

    def scale_to(self, n: int, reason: str) -> None:
        """Head for ``n`` replicas (the planner's target, at least one): start, cancel or drain workers."""
        if n == self.expected:
            return
        if n > self.expected:
            self.ups += 1
        else:
            self.downs += 1
        self.changes += 1
        while self.expected < n:
            self._start_one()
        while self.expected > n:
            if self.starting_order:
                w = self.starting_order.pop()
                self.state[w] = OFF
                self._gen[w] += 1
            else:
                self._drain(self.ready_order.pop())
        self.h.router.set_workers(self.ready_order)
        self.record(self, reason)

    def _start_one(self) -> None:
        try:
            w = self.state.index(OFF)
        except ValueError:
            w = self.h.router.add_worker()
            if w != len(self.h.workers):  # pragma: no cover - kept in step by construction
                raise RuntimeError(f"pool {self.name}: router slot {w} != worker slot {len(self.h.workers)}")
            self.h.workers.append(None)  # type: ignore[arg-type]
            self.state.append(OFF)
            self._gen.append(0)
        worker = self.h.new_worker(w)
        worker.on_idle = self._on_idle
        self.h.workers[w] = worker
        self.state[w] = STARTING
        self._gen[w] += 1
        gen = self._gen[w]
        self.starting_order.append(w)
        if self.startup_ms <= 0:
            self._become_ready(w, gen, record=False)
        else:
            self.clock.call_at(self.clock.now() + self.startup_ms, lambda: self._become_ready(w, gen), PRIO_ARRIVAL)

    def _become_ready(self, w: int, gen: int, record: bool = True) -> None:
        if self._gen[w] != gen or self.state[w] != STARTING:
            return  # cancelled before it started
        self.starting_order.remove(w)
        self.changes += 1
        self.state[w] = READY
        self.ready_order.append(w)
        if record:
            self.h.router.set_workers(self.ready_order)
            self.record(self, "ready")

    def _drain(self, w: int) -> None:
        self.state[w] = DRAINING
        worker = self.h.workers[w]
        if worker.idle:
            self._retire(w)

    def _on_idle(self, worker: Worker) -> None:
        w = worker.wid
        if self.state[w] == DRAINING and self.h.workers[w] is worker:
            self._retire(w)
            self.record(self, "drained")

    def _retire(self, w: int) -> None:
        self.state[w] = OFF
        self.retired.append(self.h.workers[w])
        self.h.router.forget_worker(w)


class PlannerDriver:
    """Ticks the planner on the clock until the trace is done and applies its targets to the pools."""

    def __init__(self, cfg: RunConfig, cluster, clock: Clock):
        assert cfg.planner is not None
        self.cfg = cfg
        self.pcfg = cfg.planner
        self.cluster = cluster
        self.clock = clock
        self.retired: list[Worker] = []
        self.rows: list[tuple] = []
        self.targets: dict[str, int] = {}
        specs = {h.name: PoolSpec(h.role, MockerCapacity(cluster.engines[h.name], cluster.timings[h.name]))
                 for h in cluster.pools}
        self.planner = Planner(self.pcfg, cfg.slo, specs)
        self.planner.check_deployment({h.name: len(h.workers) for h in cluster.pools})
        startup = self.pcfg.startup_time_s * 1000.0
        self.pools = [ScaledPool(h, cluster.engines[h.name].gpus_per_worker, clock, startup, self._record, self.retired)
                      for h in cluster.pools]
        self._t0: float | None = None

    # -- timeline -----------------------------------------------------------------------
    def _record(self, pool: ScaledPool, reason: str) -> None:
        self.rows.append((self.clock.now() / 1000.0, pool.name, self.targets.get(pool.name, pool.expected),
                          len(pool.starting_order), len(pool.ready_order), pool.count(DRAINING), pool.gpus, reason))

    def timeline(self) -> pd.DataFrame:
        """One row per change of any pool: replicas starting, routable and draining, and GPUs held."""
        return pd.DataFrame(self.rows, columns=TIMELINE_COLUMNS)

    def gpu_seconds(self, start_ms: float, end_ms: float) -> float:
        """GPUs held (starting, routable or draining), integrated over [start, end]."""
        held: dict[str, int] = {}
        total, t_prev, level = 0.0, start_ms / 1000.0, 0
        end_s = end_ms / 1000.0
        for t, pool, *_rest, gpus, _reason in self.rows:
            if t > t_prev and t_prev < end_s:
                total += level * (min(t, end_s) - t_prev)
                t_prev = min(t, end_s)
            held[pool] = gpus
            level = sum(held.values())
        if end_s > t_prev:
            total += level * (end_s - t_prev)
        return total

    def report(self) -> dict:
        """Planner facts for the summary: settings, decisions, and per pool its replicas over the run."""
        tl = self.timeline()
        pools = {}
        for p in self.pools:
            rows = tl[tl["pool"] == p.name]
            pools[p.name] = {"start": int(rows["ready"].iloc[0]), "final_ready": len(p.ready_order),
                             "peak_ready": int(rows["ready"].max()),
                             "peak_held": int((rows["starting"] + rows["ready"] + rows["draining"]).max()),
                             "scale_ups": p.ups, "scale_downs": p.downs,
                             "gpus_per_worker": p.gpus_per_worker}
        return {"config": self.pcfg.model_dump(), "pools": pools,
                "throughput_decisions": sum(d.kind == "throughput" for d in self.planner.decisions),
                "peak_gpus": self._peak_gpus()}

    def _peak_gpus(self) -> int:
        held: dict[str, int] = {}
        peak = 0
        for row in self.rows:
            held[row[1]] = row[6]
            peak = max(peak, sum(held.values()))
        return peak

    # -- ticking -----------------------------------------------------------------------
    def start(self) -> None:
        for p in self.pools:
            self.targets[p.name] = p.expected
            self._record(p, "start")
        sessions = self.cluster.frontend.trace.sessions
        self._t0 = sessions[0].start_ms if sessions else 0.0
        for on, kind, interval_s in ((self.pcfg.load_scaling, LOAD, self.pcfg.load_interval_s),
                                     (self.pcfg.uses_throughput_scaling, THROUGHPUT, self.pcfg.throughput_interval_s)):
            if on:
                self.clock.call_at(self._t0 + interval_s * 1000.0, lambda k=kind, i=interval_s: self._tick(k, i),
                                   PRIO_ARRIVAL)

    def _done(self) -> bool:
        return self.cluster.frontend.finished

    def _observe(self, kind: str) -> tuple[Observation, dict[str, PoolState]]:
        c = self.cluster.frontend.counters
        traffic = dataclasses.replace(c)            # a copy: the frontend keeps counting into ``c``
        return (Observation(self.clock.now(), kind, traffic),
                {p.name: p.observe(with_loads=kind == LOAD) for p in self.pools})

    def _tick(self, kind: str, interval_s: float) -> None:
        if self._done():
            return
        decisions = self.planner.tick(*self._observe(kind))
        self._apply(decisions.targets(), kind)
        self.clock.call_at(self.clock.now() + interval_s * 1000.0, lambda: self._tick(kind, interval_s),
                           PRIO_ARRIVAL)

    def _apply(self, targets: dict[str, int], reason: str) -> None:
        """Shrinking pools first, so the pools together never hold more than the targets allow."""
        for p in sorted(self.pools, key=lambda p: targets.get(p.name, p.expected) - p.expected):
            if p.name in targets:
                self.targets[p.name] = targets[p.name]
                p.scale_to(targets[p.name], reason)
