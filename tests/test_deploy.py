"""deploy/: the routers of a deployment, built once from a RunConfig for the simulator and validate alike."""

from __future__ import annotations

import pytest

from dynosim.config import RunConfig
from dynosim.deploy.routers import build_routers, router_params


def test_aggregated_router_follows_the_config():
    cfg = RunConfig(workers=3, router_mode="kv")
    routers = build_routers(cfg)
    assert list(routers) == ["workers"]
    r = routers["workers"]
    assert r.workers == [0, 1, 2]
    assert "policy_options" not in router_params(cfg)


def test_disaggregated_routers_prefill_configured_decode_on_decode_blocks():
    cfg = RunConfig(router_mode="kv", disagg={"prefill_workers": 2, "decode_workers": 5})
    routers = build_routers(cfg)
    assert list(routers) == ["prefill", "decode"]
    assert routers["prefill"].workers == [0, 1]
    assert routers["decode"].workers == list(range(5))
    assert type(routers["decode"].policy).__name__ == type(build_routers(RunConfig(router_mode="kv"))["workers"].policy).__name__
    assert not routers["decode"].wants_kv_events


def test_round_robin_deployment_decodes_round_robin():
    cfg = RunConfig(router_mode="round-robin", disagg={"prefill_workers": 1, "decode_workers": 2})
    assert type(build_routers(cfg)["decode"].policy).__name__ == type(build_routers(RunConfig(router_mode="round-robin"))["workers"].policy).__name__


# -- build_deployment with a worker factory of its own, on a clock of its own (no simpy) --------------

import heapq  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402

from dynosim.deploy.assembly import build_deployment  # noqa: E402
from dynosim.router.hashing import BlockHasher  # noqa: E402
from dynosim.traces.mooncake import load_trace  # noqa: E402


class HeapClock:
    """A minimal ``Clock``: enough to drive a deployment without the simulator."""

    def __init__(self):
        self.t, self._heap, self._seq = 0.0, [], itertools.count()

    def now(self):
        return self.t

    def call_at(self, t_ms, fn, priority=1):
        heapq.heappush(self._heap, (t_ms, priority, next(self._seq), fn))

    def next_time(self):
        return self._heap[0][0] if self._heap else float("inf")

    def run(self):
        while self._heap:
            self.t, _, _, fn = heapq.heappop(self._heap)
            fn()


class InstantWorker:
    """Prefills in 5 ms, then one token per ms; built with its signals (no patching after construction)."""

    def __init__(self, pool, wid, clock, signals):
        self.pool, self.wid, self.clock, self.signals = pool, wid, clock, signals
        self.served = []

    def submit(self, req):
        self.served.append(req.rid)
        t = self.clock.now() + 5.0

        def first():
            req.first_token = self.clock.now()
            req.generated = 1
            self.signals.on_first_token(req)
            self.clock.call_at(self.clock.now() + req.osl - 1, done)

        def done():
            req.generated = req.osl
            req.last_token = self.clock.now()
            req.status = "done"
            self.signals.on_complete(req)
        self.clock.call_at(t, first)


def _trace(tmp_path, n=12):
    rows = [{"timestamp": 10 * i, "input_length": 128, "output_length": 4, "hash_ids": [i % 3, 100 + i]}
            for i in range(n)]
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_trace(p, trace_block_size=64)


@pytest.mark.parametrize("disagg", [None, {"prefill_workers": 2, "decode_workers": 3}])
def test_build_deployment_with_any_worker_factory_and_clock(tmp_path, disagg):
    cfg = RunConfig(workers=2, router_mode="round-robin", trace_block_size=64, disagg=disagg)
    clock = HeapClock()
    made = []

    def factory(pool, wid, signals):
        w = InstantWorker(pool, wid, clock, signals)
        made.append(w)
        return w

    dep = build_deployment(cfg, clock, _trace(tmp_path), BlockHasher(cfg.engine.block_size, 64), factory)
    assert [p.name for p in dep.pools] == (["workers"] if disagg is None else ["prefill", "decode"])
    assert len(dep.workers) == (2 if disagg is None else 5)
    dep.frontend.start()
    clock.run()
    reqs = dep.frontend.requests
    assert len(reqs) == 12 and all(r.status == "done" for r in reqs)
    assert dep.frontend.finished
    for p in dep.pools:   # round robin spreads every pool's requests over all of its workers
        assert all(w.served for w in p.workers)
    # a worker started later (the planner's) comes from the same factory, signals bound
    extra = dep.pools[-1].new_worker(len(dep.pools[-1].workers))
    assert extra is made[-1] and extra.signals.on_complete == dep.frontend.on_complete
