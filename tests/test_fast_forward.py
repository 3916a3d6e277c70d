"""Fast-forward (uniform decode stretches in one event) gives the same results as stepping every pass."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (
    assert_same_requests,
    expanded_gaps,
    load_rows,
    make_request,
    ns,
    poly_decode,
    poly_prefill,
    router_modes,
    scenarios,
)
from dynosim.config import RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.sim.simulation import Parts, simulate

TBS = 128


def both(trace, **cfg):
    """(fast-forward state, stepped state) of the same trace and config."""
    ff = simulate(trace, RunConfig(trace_block_size=TBS, fast_forward=True, **cfg))
    step = simulate(trace, RunConfig(trace_block_size=TBS, fast_forward=False, **cfg))
    return ff, step


def assert_equivalent(ff, step):
    assert_same_requests(ff.requests, step.requests)
    g1, g2 = expanded_gaps(ff), expanded_gaps(step)
    assert len(g1) == len(g2)
    assert np.allclose(g1, g2, rtol=0, atol=1e-6)
    assert [w.sched.num_preemptions for w in ff.workers] == [w.sched.num_preemptions for w in step.workers]
    assert [w.sched.passes for w in ff.workers] == [w.sched.passes for w in step.workers]


def stretches(state) -> int:
    return state.gaps.runs


# ---------------------------------------------------------------------------
# scheduler level: a stretch is exactly k stepped passes


def decoding_scheduler(bs: int = 16, blocks: int = 64, osls=(40, 25, 33), isls=(37, 16, 50)) -> VllmScheduler:
    s = VllmScheduler(MockerArgs(block_size=bs, num_gpu_blocks=blocks, max_num_seqs=8, max_num_batched_tokens=512))
    for i, (isl, osl) in enumerate(zip(isls, osls)):
        s.add(make_request(i, isl, osl, bs))
    s.step()
    s.step()
    return s


def kv_state(s: VllmScheduler):
    return (dict(s.kv.active), list(s.kv.inactive), s.kv.n_partial,
            [(r.rid, r.computed, r.generated, list(r.blocks), r.partial) for r in s.running])


def test_uniform_stretch_equals_stepping_pass_by_pass():
    checked = 0
    s = decoding_scheduler()
    while s.running:
        k = s.uniform_run()
        if k < 1:
            s.step()
            continue
        ref = copy.deepcopy(s)
        events_ff, events_step = [], []
        s.kv.sink = lambda *e: events_ff.append(e)
        ref.kv.sink = lambda *e: events_step.append(e)
        durs = s.uniform_durations(k)
        stepped = []
        for _ in range(k):
            res = ref.step()
            assert not res.completed and not res.preempted and res.prefill_tokens == 0
            assert len(res.emitted) == len(ref.running)
            stepped.append(res.duration_ms)
        assert durs.tolist() == stepped  # bit-identical durations
        s.advance_uniform(k)
        assert kv_state(s) == kv_state(ref)  # same tokens, same blocks (partials promoted alike)
        assert events_ff == events_step
        assert s.passes == ref.passes
        checked += 1
    assert checked >= 3


def test_uniform_run_is_zero_when_anything_else_can_happen():
    s = VllmScheduler(MockerArgs(block_size=16, num_gpu_blocks=64, max_num_seqs=4, max_num_batched_tokens=512))
    a = make_request(0, 32, 10, 16)  # two full blocks, no partial
    s.add(a)
    assert s.uniform_run() == 0  # nothing running yet (prefill pending)
    s.step()
    assert s.uniform_run() == 0  # first decode allocates the partial block
    s.step()
    assert s.uniform_run() > 0
    s.add(make_request(1, 20, 10, 16))
    assert s.uniform_run() == 0  # a waiting request could be admitted by the next pass
    s2 = VllmScheduler(MockerArgs(block_size=16, num_gpu_blocks=64, max_num_seqs=4, max_num_batched_tokens=512))
    b = make_request(0, 20, 3, 16)
    s2.add(b)
    s2.step()
    s2.step()
    assert b.generated == 2 and s2.uniform_run() == 0  # the next pass completes it


# ---------------------------------------------------------------------------
# simulator level


def test_regression_stretch_end_time_is_exact(tmp_path):
    # A decode stretch ending at a time that is not exactly start + (end - start) in floating
    # point used to crash the run ("cannot schedule in the past") with fast_forward on.
    trace = load_rows(tmp_path, [{"timestamp": 1, "input_length": 7, "output_length": 46, "hash_ids": [10002]}])
    ff, step = both(trace, engine=MockerArgs(block_size=16, num_gpu_blocks=26, max_num_seqs=2,
                                              max_num_batched_tokens=256))
    assert ff.requests[0].status == "done" and stretches(ff) >= 1
    assert_equivalent(ff, step)


def pass_ends(trace) -> list[float]:
    ends: list[float] = []
    simulate(trace, RunConfig(trace_block_size=TBS, fast_forward=False), parts=Parts(on_pass=lambda w, end, res: ends.append(end)))
    return ends


def test_arrivals_mid_stretch_and_on_a_pass_boundary(tmp_path):
    total = 16384 * 64
    pre, dec = (lambda t: ns(poly_prefill(t))), (lambda c: ns(poly_decode(c, total)))
    a_row = {"timestamp": 0, "input_length": 512, "output_length": 300, "hash_ids": [1, 2, 3, 4]}
    ends = pass_ends(load_rows(tmp_path, [a_row], name="a.jsonl"))
    assert len(ends) == 300
    mid = (ends[100] + ends[101]) / 2  # strictly inside a pass of A's decode
    b_row = {"timestamp": mid, "input_length": 256, "output_length": 5, "hash_ids": [9, 8]}
    ends2 = pass_ends(load_rows(tmp_path, [a_row, b_row], name="ab.jsonl"))
    edge = ends2[200]  # exactly when a pass ends and the next one starts
    c_row = {"timestamp": edge, "input_length": 256, "output_length": 5, "hash_ids": [7, 6]}
    trace = load_rows(tmp_path, [a_row, b_row, c_row], name="abc.jsonl")
    ff, step = both(trace)
    assert_equivalent(ff, step)
    assert stretches(ff) >= 3  # stretches before, between and after the arrivals
    for state in (ff, step):
        a, b, c = state.requests
        assert b.arrival == mid and c.arrival == edge
        # B joins at the next pass boundary: that pass prefills B and decodes A (context 512 + 102)
        assert b.first_token == pytest.approx(ends[101] + pre(256) + dec(614), abs=1e-6)
        # C arrives exactly at a pass end: admitted by the pass that starts then (A's context 512 + 201)
        assert c.first_token == pytest.approx(edge + pre(256) + dec(713), abs=1e-6)
        assert a.generated == 300 and b.generated == c.generated == 5


def test_equivalence_under_preemption(tmp_path):
    rows = [{"timestamp": 0, "input_length": 384, "output_length": 120, "hash_ids": [1, 2, 3]},
            {"timestamp": 0, "input_length": 256, "output_length": 90, "hash_ids": [4, 5]},
            {"timestamp": 5, "input_length": 200, "output_length": 70, "hash_ids": [1, 2]},
            {"timestamp": 400, "input_length": 300, "output_length": 60, "hash_ids": [4, 5, 6]}]
    trace = load_rows(tmp_path, rows)
    ff, step = both(trace, engine=MockerArgs(block_size=16, num_gpu_blocks=50, max_num_seqs=8))
    assert sum(r.preemptions for r in ff.requests) >= 2
    assert stretches(ff) >= 1
    assert all(r.status == "done" for r in ff.requests)
    assert_equivalent(ff, step)


def test_equivalence_with_the_interpolated_model(tmp_path):
    rows = [{"timestamp": 10 * i, "input_length": 300 + 29 * i, "output_length": 50 + 3 * i,
             "hash_ids": [i % 3, 100 + i, 200 + i, 300 + i]} for i in range(8)]
    trace = load_rows(tmp_path, rows)
    eng = MockerArgs(block_size=16, num_gpu_blocks=120, timing="interpolated",
                     timing_profile="h200_llama3.1-8b-fp8_vllm")
    ff, step = both(trace, workers=2, engine=eng)
    assert stretches(ff) >= 1
    assert all(r.status == "done" for r in ff.requests)
    assert_equivalent(ff, step)


def test_regression_stretch_after_a_skipped_decode_keeps_its_gaps(tmp_path):
    # With FIFO preemption a decoding request can be left out of a pass (the budget went to a
    # prefill chunk ahead of it). A stretch starting right after it used to record that
    # request's next gap as one pass instead of two: same token times, wrong gap distribution.
    rows = [{"input_length": 236, "output_length": 150, "hash_ids": [10001, 10002], "timestamp": 0},
            {"input_length": 176, "output_length": 80, "hash_ids": [0, 1], "timestamp": 250},
            {"input_length": 121, "output_length": 150, "hash_ids": [3000], "timestamp": 267},
            {"input_length": 7, "output_length": 70, "hash_ids": [3000], "timestamp": 517},
            {"input_length": 96, "output_length": 150, "hash_ids": [3000], "timestamp": 534, "session_id": "s4"},
            {"input_length": 262, "output_length": 81, "hash_ids": [0, 1, 10003], "timestamp": 551},
            {"input_length": 4, "output_length": 46, "hash_ids": [3000], "session_id": "s4", "delay": 40},
            {"input_length": 4, "output_length": 2, "hash_ids": [10004], "session_id": "s4", "delay": 0}]
    eng = MockerArgs(block_size=64, num_gpu_blocks=11, max_num_seqs=3, max_num_batched_tokens=64,
                     enable_prefix_caching=False, preemption_mode="fifo")
    ff, step = both(load_rows(tmp_path, rows), workers=2, engine=eng)
    assert stretches(ff) >= 1 and sum(r.preemptions for r in ff.requests) >= 1
    assert_equivalent(ff, step)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(max_osl=150, timings=("polynomial", "interpolated"), caching=(True, True, False),
                    modes=("lifo", "fifo")),
       workers=st.integers(1, 3), mode=st.sampled_from(router_modes()), seed=st.integers(0, 3))
def test_equivalence_on_random_traces(tmp_path_factory, sc, workers, mode, seed):
    rows, eng = sc
    trace = load_rows(tmp_path_factory.mktemp("ff"), rows, TBS)
    ff, step = both(trace, workers=workers, router_mode=mode, seed=seed, engine=MockerArgs(**eng))
    assert_equivalent(ff, step)
