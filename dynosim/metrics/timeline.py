"""A run's timeline: per-worker and per-pool time series sampled in virtual time, and their frame.

A ``TimelineSampler`` is one event on the run's clock every ``interval``: it reads each worker's
scheduler and KV cache and each pool's router, so its cost is bounded by samples × workers (not
by passes or requests) and every series shares one time grid. It mutates nothing, so the run's
results are the same with and without it. It keeps sampling until the clock has nothing else to
do, so a late drain is covered.

The interval is the span of the trace's arrivals (first turns at their timestamps, later turns
at their delays; all divided by the speed-up) over ``points``. When the run outlasts
``2 × points`` intervals (a long drain; a closed loop, which starts at 1 ms) the interval
doubles and samples merge pairwise, so a timeline never holds more than ``2 × points`` samples.

The frame (``RunResult.timeline``, ``timeline.parquet``) is wide, one row per (sample, pool,
worker), sorted by ``time_s``, pool, worker:

- ``time_s`` (float): end of the sample interval, seconds since the first arrival;
- ``pool`` (str): ``agg``, ``prefill`` or ``decode``;
- ``worker`` (int): the worker id in its pool; ``-1`` for the pool-wide row of that sample;
- per-worker columns (NaN on pool rows, and on a planner's worker slot that holds no engine):
  ``running``, ``waiting`` (requests in the engine's running list and waiting queue at
  ``time_s``), ``kv_used_blocks`` (referenced by a request), ``kv_cached_blocks`` (held by the
  prefix cache, free to evict), ``kv_total_blocks`` (capacity), ``tokens_scheduled`` (token
  budget used by the passes that ended in the interval: prompt chunks plus one per decode)
  and ``passes`` (passes that ended in the interval; a fast-forwarded stretch's passes are
  counted by their own end times);
- pool-wide columns (only on ``worker == -1`` rows, NaN elsewhere): ``router_queue``
  (requests held in the pool router's queue; NaN when that router does not queue),
  ``transfers_in_flight`` (on the decode pool: KV hand-offs started whose KV has not landed;
  NaN for other pools) and ``replicas`` (routable workers; changes under the planner).

All value columns are float64 (NaN marks "not applicable"). A regular pass runs its scheduler
step when it starts (its tokens land at its end), so a point sample taken while it runs shows
the engine as that step left it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from dynosim.clock import PRIO_PASS_START, Clock

# after every other event of the same instant: a sample sees the state the instant leaves
PRIO_SAMPLE = PRIO_PASS_START + 1
POOL_NAMES = {"aggregated": "agg", "prefill": "prefill", "decode": "decode"}
WORKER_COLUMNS = ["running", "waiting", "kv_used_blocks", "kv_cached_blocks", "kv_total_blocks",
                  "tokens_scheduled", "passes"]
POOL_COLUMNS = ["router_queue", "transfers_in_flight", "replicas"]
COLUMNS = ["time_s", "pool", "worker", *WORKER_COLUMNS, *POOL_COLUMNS]
CLOSED_LOOP_START_MS = 1.0
NAN = float("nan")


@dataclass
class PoolSource:
    """What the sampler reads of one pool (duck-typed, so this module needs no simulator import).

    ``workers``: the pool's worker slots by id (the list the planner grows in place); each has
    ``sched`` (``running``, ``waiting``, ``kv``) and ``progress(t)``. ``router``: ``workers``
    (routable ids) and ``queue`` (None or sized). ``live(wid)``: the slot holds an engine (None:
    always). ``transfers()``: hand-offs in flight into this pool (None: not applicable).
    """

    name: str
    router: Any
    workers: Sequence[Any]
    live: Callable[[int], bool] | None = None
    transfers: Callable[[], int] | None = None


def arrival_span_ms(trace) -> float:
    """How long the trace's arrivals span: each session's start plus its turns' delays (service times
    unknown in advance), from the first start; already divided by the speed-up."""
    sessions = trace.sessions
    if not sessions:
        return 0.0
    first = sessions[0].start_ms
    return max(s.start_ms + sum(t.delay_ms for t in s.turns) for s in sessions) - first


class TimelineSampler:
    """Samples the pools on ``clock`` every interval from ``t0_ms`` until the run ends."""

    def __init__(self, clock: Clock, pools: list[PoolSource], t0_ms: float, interval_ms: float, points: int):
        if points < 1:
            raise ValueError(f"timeline points must be >= 1, got {points}")
        if not interval_ms > 0:
            raise ValueError(f"timeline interval must be > 0 ms, got {interval_ms}")
        self.clock = clock
        self.pools = pools
        self.t0 = t0_ms
        self.interval_ms = interval_ms
        self.points = points
        self._k = 1
        # (k, pool index, worker id, running, waiting, used, cached, total, cumulative passes, cumulative tokens)
        self._rows: list[tuple] = []
        self._pool_rows: list[tuple] = []   # (k, pool index, router queue, transfers, replicas)
        # per slot: (worker object, passes and tokens of the engines the slot held before it)
        self._slots: dict[tuple[int, int], tuple[Any, int, int]] = {}
        self._frame: pd.DataFrame | None = None

    @classmethod
    def for_run(cls, clock: Clock, cluster, trace, points: int, *, closed_loop: bool = False,
                planner=None) -> "TimelineSampler":
        """A sampler for a wired cluster (``cluster.pools``; with a planner, its pools' slot states)."""
        scaled = {p.name: p for p in planner.pools} if planner is not None else {}
        transfers = getattr(cluster.frontend, "transfers_in_flight", None)
        sources = []
        for h in cluster.pools:
            sp = scaled.get(h.name)
            live = (lambda w, sp=sp: sp.state[w] != "off") if sp is not None else None
            into = (lambda fe=cluster.frontend: fe.transfers_in_flight) \
                if transfers is not None and h.role == "decode" else None
            sources.append(PoolSource(POOL_NAMES[h.role], h.router, h.workers, live, into))
        if closed_loop or not trace.sessions:
            t0, interval = 0.0, CLOSED_LOOP_START_MS
        else:
            t0 = trace.sessions[0].start_ms
            span = arrival_span_ms(trace)
            interval = span / points if span > 0 else CLOSED_LOOP_START_MS
        return cls(clock, sources, t0, interval, points)

    def start(self) -> None:
        self.clock.call_at(self.t0 + self.interval_ms, self._tick, PRIO_SAMPLE)

    # -- sampling --------------------------------------------------------------------------
    def _tick(self) -> None:
        clock = self.clock
        now = clock.now()
        k = self._k
        rows = self._rows
        slots = self._slots
        for p, src in enumerate(self.pools):
            live = src.live
            for wid, w in enumerate(src.workers):
                slot = slots.get((p, wid))
                if slot is None or slot[0] is not w:
                    # a fresh engine in the slot (planner): carry what the slot's earlier ones did
                    slot = (w, 0, 0) if slot is None else \
                        (w, slot[1] + slot[0].passes_done, slot[2] + slot[0].tokens_done)
                    slots[(p, wid)] = slot
                passes, tokens = w.progress(now)
                passes += slot[1]
                tokens += slot[2]
                if live is not None and not live(wid):
                    rows.append((k, p, wid, NAN, NAN, NAN, NAN, NAN, passes, tokens))
                    continue
                s = w.sched
                kv = s.kv
                rows.append((k, p, wid, len(s.running), len(s.waiting), kv.num_active, len(kv.inactive),
                             kv.capacity, passes, tokens))
            q = src.router.queue
            self._pool_rows.append((k, p, NAN if q is None else len(q),
                                    NAN if src.transfers is None else src.transfers(), len(src.router.workers)))
        if clock.next_time() == math.inf:
            return  # nothing else will happen: this sample covers the end of the run
        if k >= 2 * self.points:
            self._coarsen()
            k = self._k
        self._k = k + 1
        clock.call_at(self.t0 + self._k * self.interval_ms, self._tick, PRIO_SAMPLE)

    def _coarsen(self) -> None:
        """Double the interval: keep every second sample (counts are cumulative, so nothing is lost)."""
        self._rows = [(r[0] // 2, *r[1:]) for r in self._rows if r[0] % 2 == 0]
        self._pool_rows = [(r[0] // 2, *r[1:]) for r in self._pool_rows if r[0] % 2 == 0]
        self._k //= 2
        self.interval_ms *= 2

    # -- the frame ---------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """The timeline as the documented wide frame (built once, on first use)."""
        if self._frame is None:
            self._frame = self._build()
        return self._frame

    def _build(self) -> pd.DataFrame:
        dt_s = self.interval_ms / 1000.0
        names = [src.name for src in self.pools]
        n_w, n_p = len(self._rows), len(self._pool_rows)
        w = np.array(self._rows, dtype=float).reshape(n_w, 10)
        pr = np.array(self._pool_rows, dtype=float).reshape(n_p, 5)
        # cumulative passes and tokens per slot -> what each interval added
        by_slot = np.lexsort((w[:, 0], w[:, 2], w[:, 1]))
        cum = w[by_slot, 8:10]
        added = cum.copy()
        same = (w[by_slot[1:], 1] == w[by_slot[:-1], 1]) & (w[by_slot[1:], 2] == w[by_slot[:-1], 2])
        added[1:][same] -= cum[:-1][same]
        w[by_slot, 8:10] = added
        k = np.concatenate([w[:, 0], pr[:, 0]])
        pool_idx = np.concatenate([w[:, 1], pr[:, 1]]).astype(np.int64)
        worker = np.concatenate([w[:, 2], np.full(n_p, -1.0)]).astype(np.int64)
        cols: dict[str, Any] = {"time_s": k * dt_s,
                                "pool": pd.Series(np.array(names, dtype=object)[pool_idx] if names else [],
                                                  dtype="str"),
                                "worker": worker}
        for i, c in enumerate(WORKER_COLUMNS):
            src = {"tokens_scheduled": 9, "passes": 8}.get(c, 3 + i)   # raw rows: ..., passes, tokens
            cols[c] = np.concatenate([w[:, src], np.full(n_p, np.nan)])
        for i, c in enumerate(POOL_COLUMNS):
            cols[c] = np.concatenate([np.full(n_w, np.nan), pr[:, 2 + i]])
        df = pd.DataFrame(cols, columns=COLUMNS)
        order = np.lexsort((worker, pool_idx, k))
        df = df.iloc[order].reset_index(drop=True)
        df.attrs["interval_s"] = dt_s
        return df


def interval_s(timeline: pd.DataFrame) -> float:
    """The sample interval of a timeline frame (its samples sit at multiples of it)."""
    if "interval_s" in timeline.attrs:
        return float(timeline.attrs["interval_s"])
    t = np.unique(timeline["time_s"].to_numpy())
    return float(t[1] - t[0]) if len(t) > 1 else float(t[0]) if len(t) else float("nan")
