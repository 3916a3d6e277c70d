"""DESIGN §6 invariants, checked on random small traces and deployments (hypothesis).

1. every request finishes exactly once, or is failed with a reason;
2. KV blocks are conserved at every pass, and all are released at the end;
3. causality: arrival <= routed <= first token <= last token, tokens in order;
4. same trace + config + seed => byte-identical results;
5. cache hits never exceed what is resident (as told by the KV events).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dynosim
from conftest import load_rows, router_modes, scenarios, write_trace
from dynosim.config import RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.kv_cache import KvCache
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.deploy.frontend import Frontend
from dynosim.sim.simulation import Parts, simulate

TBS = 128


class ResidencyTrackingKv(KvCache):
    """A KvCache whose prefix lookups are checked against the indexer's view (the KV events)."""

    def __init__(self, capacity, block_size, sink, resident: set[int]):
        super().__init__(capacity, block_size, sink)
        self.resident = resident
        self.last_lookup: dict[int, int] = {}  # id(seq_hashes) -> resident prefix blocks at lookup

    def match_prefix_split(self, seq_hashes):
        n, n_active = super().match_prefix_split(seq_hashes)
        if self.sink is not None:
            told = 0
            for h in seq_hashes:
                if h not in self.resident:
                    break
                told += 1
            assert n <= told, f"hit {n} blocks but only {told} are resident per the KV events"
            assert n == told
            self.last_lookup[id(seq_hashes)] = told
        assert n_active <= n
        return n, n_active


class CheckedScheduler(VllmScheduler):
    """Tracks residency from the KV event stream and checks every admission's reuse against it."""

    instances: list["CheckedScheduler"] = []

    def __init__(self, args, timing=None, sink=None, **kw):
        self.resident: set[int] = set()
        self.events = Counter()
        self._downstream = sink  # e.g. the router's indexer: keep feeding it
        super().__init__(args, timing, sink=self._on_event, **kw)
        self.kv = ResidencyTrackingKv(args.num_gpu_blocks, args.block_size,
                                      self.kv.sink, self.resident)
        CheckedScheduler.instances.append(self)

    def _on_event(self, event):
        kind, hashes, _ = event
        if self._downstream is not None:
            self._downstream(event)
        self.events[kind] += 1
        if kind == "stored":
            assert not (set(hashes) & self.resident), "stored twice without a removal"
            self.resident.update(hashes)
        else:
            assert set(hashes) <= self.resident, "removed a block that was never stored"
            self.resident.difference_update(hashes)

    def step(self):
        before = {id(r): (r.reused, r.admitted) for r in self.waiting}
        res = super().step()
        bs = self.bs
        for r in self.running:
            if id(r) not in before:
                continue  # was running already
            reused0, admitted0 = before[id(r)]
            # admitted in this pass: its reuse is bounded by the resident prefix at lookup time
            told = self.kv.last_lookup.get(id(r.seq_hashes), 0) if self.kv.sink is not None else 0
            if r.reused > reused0:
                assert r.reused <= told * bs
            if not admitted0:
                assert r.first_reused <= told * bs
        if self.kv.sink is not None:
            assert self.resident == set(self.kv.active) | set(self.kv.inactive)
        else:
            assert all(r.reused == 0 for r in self.running)
        return res


def check_pass(worker, end, res):
    """Invariant 2 at the end of every regular pass (run with fast_forward=False)."""
    s = worker.sched
    kv = s.kv
    kv.check()
    cap = kv.capacity
    free = cap - len(kv.active) - len(kv.inactive) - kv.n_partial
    assert free >= 0 and len(kv.active) + len(kv.inactive) + kv.n_partial + free == cap
    assert kv.used <= cap and kv.free_slots() == cap - kv.num_active
    # references are exactly those of the running requests; waiting ones hold nothing
    refs: Counter = Counter()
    for r in s.running:
        refs.update(r.blocks)
        assert len(r.blocks) == r.computed // s.bs and r.partial == bool(r.computed % s.bs)
        assert r.computed <= r.seq_len and r.status == "running"
    assert dict(refs) == kv.active
    assert kv.n_partial == sum(r.partial for r in s.running)
    for r in s.waiting:
        assert r.blocks == [] and not r.partial and r.computed == 0
    for r in res.completed:
        assert r.blocks == [] and not r.partial and r.status == "done"


class CountingFrontend(Frontend):
    completions: Counter = Counter()
    failures: Counter = Counter()

    def on_complete(self, req):
        CountingFrontend.completions[req.rid] += 1
        super().on_complete(req)

    def on_failed(self, req):
        CountingFrontend.failures[req.rid] += 1
        super().on_failed(req)


def run_checked(trace, cfg):
    CheckedScheduler.instances.clear()
    CountingFrontend.completions = Counter()
    CountingFrontend.failures = Counter()
    state = simulate(trace, cfg, parts=Parts(on_pass=check_pass, scheduler=CheckedScheduler, frontend=CountingFrontend))
    assert len(CheckedScheduler.instances) == cfg.workers
    return state


def check_final(state, trace):
    reqs = state.requests
    # 1. nothing vanishes: every row became a request; each finished once or failed with a reason
    assert len(reqs) == trace.n_requests
    assert sorted(r.rid for r in reqs) == list(range(len(reqs)))
    comp, fail = CountingFrontend.completions, CountingFrontend.failures
    for r in reqs:
        if r.status == "done":
            assert comp[r.rid] == 1 and fail[r.rid] == 0
            assert r.generated == r.osl
        else:
            assert r.status == "failed" and len(r.failure) > 5, (r.status, r.failure)
            assert comp[r.rid] == 0 and fail[r.rid] == (1 if r.worker >= 0 else 0)
            if not r.admitted:  # rejected up front (a request can only fail later if it can never run again)
                assert math.isnan(r.first_token) and r.generated == 0
            assert r.generated < r.osl
    for w in state.workers:
        assert not w.sched.running and not w.sched.waiting and not w._busy
        # 2. at the end every block is released (cached blocks may stay resident, unreferenced)
        assert w.sched.kv.active == {} and w.sched.kv.n_partial == 0
        w.sched.kv.check()
    # 3. causality
    for r in reqs:
        if r.status == "done":
            assert r.arrival <= r.routed <= r.first_token <= r.last_token
            assert 0 <= r.worker < state.config.workers
            assert (r.first_token == r.last_token) == (r.osl == 1)
            assert 0 <= r.first_reused <= r.isl and 0 <= r.reused <= r.isl
    values, counts = state.gaps.arrays()
    assert (values > 0).all()  # tokens strictly in order
    assert int(counts.sum()) == sum(max(r.generated - 1, 0) for r in reqs)  # every later token, once
    by_session: dict[str, list] = {}
    for r in reqs:
        by_session.setdefault(r.session, []).append(r)
    for turns in by_session.values():
        turns.sort(key=lambda r: r.turn)
        assert [r.turn for r in turns] == list(range(len(turns)))
        for prev, nxt in zip(turns, turns[1:]):
            done_at = prev.last_token if prev.status == "done" else prev.arrival
            assert nxt.arrival >= done_at


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(timings=("polynomial", "interpolated"), caching=(True, True, False), modes=("lifo", "fifo")),
       workers=st.integers(1, 4), mode=st.sampled_from(router_modes()), seed=st.integers(0, 5))
def test_invariants_on_random_deployments(tmp_path_factory, sc, workers, mode, seed):
    rows, eng = sc
    trace = load_rows(tmp_path_factory.mktemp("inv"), rows, TBS)
    cfg = RunConfig(workers=workers, router_mode=mode, seed=seed, trace_block_size=TBS, fast_forward=False,
                    engine=MockerArgs(**eng))
    state = run_checked(trace, cfg)
    check_final(state, trace)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(max_osl=150), workers=st.integers(1, 3))
def test_end_state_invariants_with_fast_forward(tmp_path_factory, sc, workers):
    rows, eng = sc
    trace = load_rows(tmp_path_factory.mktemp("inv_ff"), rows, TBS)
    cfg = RunConfig(workers=workers, trace_block_size=TBS, fast_forward=True, engine=MockerArgs(**eng))
    CheckedScheduler.instances.clear()
    CountingFrontend.completions = Counter()
    CountingFrontend.failures = Counter()
    state = simulate(trace, cfg, parts=Parts(scheduler=CheckedScheduler, frontend=CountingFrontend))
    check_final(state, trace)


def test_the_checks_catch_a_leaked_block(tmp_path):
    """The per-pass conservation check is live: a scheduler that forgets to release fails it."""

    class Leaky(CheckedScheduler):
        def _free(self, req):
            if req.status == "running" and req.generated >= req.osl and req.blocks:
                req.blocks = req.blocks[:-1]  # drop a reference on the floor
            super()._free(req)

    rows = [{"timestamp": 0, "input_length": 200, "output_length": 3, "hash_ids": [1, 2]},
            {"timestamp": 0, "input_length": 100, "output_length": 30, "hash_ids": [3]}]
    trace = load_rows(tmp_path, rows)
    cfg = RunConfig(trace_block_size=TBS, fast_forward=False, engine=MockerArgs(block_size=16, num_gpu_blocks=64))
    with pytest.raises(AssertionError):
        simulate(trace, cfg, parts=Parts(on_pass=check_pass, scheduler=Leaky))


def test_zero_duration_output_recompute_pass_does_not_stall(tmp_path):
    # B is preempted after ~70 tokens; when readmitted alone its prompt is fully cached, so the
    # first recompute chunks are output tokens only: passes of 0 ms that still make progress.
    rows = [{"timestamp": 0, "input_length": 32, "output_length": 200, "hash_ids": [1]},
            {"timestamp": 0, "input_length": 32, "output_length": 150, "hash_ids": [2]}]
    trace = load_rows(tmp_path, rows)
    zero = []
    cfg = RunConfig(trace_block_size=TBS, fast_forward=False,
                    engine=MockerArgs(block_size=16, num_gpu_blocks=20, max_num_seqs=4, max_num_batched_tokens=64))
    state = simulate(trace, cfg, parts=Parts(on_pass=lambda w, end, res: zero.append(res) if res.duration_ms == 0 else None))
    a, b = state.requests
    assert a.status == b.status == "done" and b.generated == 150
    assert b.preemptions == 1 and b.reused == 32
    assert zero and all(r.scheduled_tokens > 0 and not r.emitted for r in zero)
    ff = simulate(trace, cfg.model_copy(update={"fast_forward": True}))
    assert [t for r in ff.requests for t in (r.first_token, r.last_token)] == pytest.approx(
        [t for r in state.requests for t in (r.first_token, r.last_token)], abs=1e-6)


def test_up_front_rejection_is_exact(tmp_path):
    # The last output token's KV is never computed: 60 + 5 - 1 = 64 tokens fill 4 blocks of 16
    # exactly, so the request is served; one more output token could never fit and fails up front.
    rows = [{"timestamp": 0, "input_length": 60, "output_length": 5, "hash_ids": [1]},
            {"timestamp": 1, "input_length": 60, "output_length": 6, "hash_ids": [2]}]
    trace = load_rows(tmp_path, rows)
    cfg = RunConfig(trace_block_size=TBS, engine=MockerArgs(block_size=16, num_gpu_blocks=4, max_num_seqs=2,
                                                           max_num_batched_tokens=256))
    CountingFrontend.completions, CountingFrontend.failures = Counter(), Counter()
    state = simulate(trace, cfg, parts=Parts(scheduler=CheckedScheduler, frontend=CountingFrontend))
    ok, too_big = state.requests
    assert ok.status == "done" and ok.generated == 5
    assert too_big.status == "failed" and too_big.failure == "needs 5 KV blocks, engine holds 4" and too_big.worker == -1
    check_final(state, trace)


# ---------------------------------------------------------------------------
# 4. determinism


def random_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows, t = [], 0.0
    for i in range(n):
        isl = rng.randint(50, 1500)
        n_ids = -(-isl // 512)
        shared, doc = rng.randint(0, n_ids), rng.randint(0, 2)
        ids = [doc * 100 + j for j in range(shared)] + [1000 + 10 * i + j for j in range(n_ids - shared)]
        t += rng.choice([0, 5, 40, 300])
        rows.append({"timestamp": t, "input_length": isl, "output_length": rng.randint(1, 120), "hash_ids": ids})
    return rows


RUN_TIMING_FIELDS = ("wall_s", "load_s", "sim_wall_s", "x_realtime")


def saved(path, out, **kw):
    res = dynosim.run(path, **kw)
    res.save(out)
    summary = json.loads((out / "summary.json").read_text())
    for k in RUN_TIMING_FIELDS:
        summary["run"].pop(k)
    return res, summary, (out / "requests.csv").read_bytes()


def test_same_seed_gives_byte_identical_results(tmp_path):
    path = write_trace(tmp_path / "t.jsonl", random_rows(60, 1))
    kw = dict(workers=3, router_mode="random", seed=7,
              engine={"block_size": 16, "num_gpu_blocks": 200, "max_num_seqs": 8})
    r1, s1, csv1 = saved(path, tmp_path / "a", **kw)
    r2, s2, csv2 = saved(path, tmp_path / "b", **kw)
    assert csv1 == csv2
    assert json.dumps(s1, sort_keys=True) == json.dumps(s2, sort_keys=True)
    # the only differences in summary.json are the wall-clock fields under "run"
    assert set(r1.summary["run"]) - set(s1["run"]) == set(RUN_TIMING_FIELDS)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "requests.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "requests.parquet"))
    # a busy run: prefix hits, evictions and preemptions all play a part
    assert s1["requests"]["completed"] == 60 and s1["preemptions"] > 0 and s1["prefix_reuse_ratio"] > 0.1
    # a different seed routes differently
    r3, s3, csv3 = saved(path, tmp_path / "c", **{**kw, "seed": 8})
    assert csv3 != csv1
    assert (r3.requests["worker"] != r1.requests["worker"]).any()
    assert s3["run"]["seed"] == 8 and s1["run"]["seed"] == 7
