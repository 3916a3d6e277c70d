"""A pass is a decision, then its application: ``schedule() -> SchedulePlan``, ``apply(plan) -> PassResult``."""

from __future__ import annotations

import pytest

from conftest import drive, fifo_at_the_brink, make_request, ns, poly_decode, poly_prefill
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.contract import KvPoolView, PassResult, Scheduler
from dynosim.engines.mocker.scheduler import SchedulePlan, VllmScheduler


def sched(**kw) -> VllmScheduler:
    return VllmScheduler(MockerArgs(**kw))


def test_vllm_scheduler_implements_the_protocol():
    s = sched()
    assert isinstance(s, Scheduler) and isinstance(s.kv, KvPoolView)


def test_schedule_decides_and_allocates_apply_emits_and_completes():
    s = sched()
    a = make_request(0, 300, 1, 64)
    s.add(a)
    plan = s.schedule()
    assert isinstance(plan, SchedulePlan)
    assert plan.scheduled == [a] and plan.num_tokens == [300] and plan.admitted == [a]
    assert plan.preempted == [] and plan.failed == [] and plan.budget_used == 300
    # decided and allocated, nothing emitted yet
    assert a.computed == 300 and len(a.blocks) == 4 and a.partial and a.generated == 0 and s.passes == 0
    res = s.apply(plan)
    assert isinstance(res, PassResult)
    assert res.emitted == [a] and res.completed == [a] and a.status == "done" and a.generated == 1
    assert a.blocks == [] and not a.partial and s.kv.num_active == 0 and s.passes == 1
    assert res.duration_ms == ns(poly_prefill(300)) and res.prefill_tokens == 300
    assert (res.scheduled_tokens, res.scheduled_requests) == (300, 1)


def test_a_plan_that_preempts_admits_nobody_and_its_application_emits_the_survivors():
    """Dynamo probe PREEMPT: 10 blocks; A 384 tokens, B 256: both prefilled, the pool is full."""
    s = sched(num_gpu_blocks=10)
    a, b, c = make_request(0, 384, 20, 64), make_request(1, 256, 20, 64), make_request(2, 64, 5, 64)
    s.add(a)
    s.add(b)
    s.step()
    s.add(c)
    plan = s.schedule()  # A's next token needs a 7th block: B (the newest) is preempted, C is not admitted
    assert plan.preempted == [b] and plan.scheduled == [a] and plan.num_tokens == [1]
    assert plan.admitted == [] and plan.budget_used == 1
    assert list(s.waiting) == [b, c] and b.blocks == [] and b.computed == 0 and b.status == "waiting"
    assert a.generated == 1  # emission is apply's
    res = s.apply(plan)
    assert res.preempted == 1 and res.emitted == [a] and res.completed == [] and a.generated == 2
    assert res.duration_ms == ns(poly_decode(385, 640)) and res.scheduled_requests == 1


def test_fifo_plan_undoes_the_victims_tokens():
    s, x, y, p = fifo_at_the_brink()
    plan = s.schedule()  # X and Y decode, then P's chunk needs blocks: X, already scheduled, is the victim
    assert plan.preempted == [x] and plan.scheduled == [y, p] and plan.num_tokens == [1, 62]
    assert plan.budget_used == 63
    res = s.apply(plan)
    assert res.emitted == [y] and res.scheduled_tokens == 63 and res.scheduled_requests == 2


def test_failed_requests_are_in_the_plan():
    s = sched(num_gpu_blocks=4, block_size=16)
    big, ok = make_request(0, 100, 2, 16), make_request(1, 20, 2, 16)
    s.add(big)
    s.add(ok)
    plan = s.schedule()
    assert plan.failed == [big] and big.status == "failed" and plan.admitted == [ok]
    assert s.apply(plan).failed == [big]


@pytest.mark.parametrize("mode", ["lifo", "fifo"])
def test_step_is_apply_of_schedule(mode):
    def run(split: bool):
        s = sched(block_size=16, num_gpu_blocks=24, max_num_seqs=6, max_num_batched_tokens=96, preemption_mode=mode,
                  nextn=1)
        reqs = [make_request(i, 30 + 17 * i, 25 + 3 * i, 16, tag=i % 3) for i in range(8)]
        for r in reqs:
            s.add(r)
        log = []
        while s.has_work:
            res = s.apply(s.schedule()) if split else s.step()
            log.append((res.duration_ms, [r.rid for r in res.emitted], res.tokens, res.preempted,
                        res.scheduled_tokens, res.scheduled_requests, res.prefill_tokens))
        return log, [(r.generated, r.preemptions, r.reused) for r in reqs], s.num_preemptions
    a, b = run(False), run(True)
    assert a == b and a[2] > 0


def test_drive_still_steps():
    s = sched()
    d = drive(s, [(0.0, make_request(0, 100, 3, 64))])
    assert d.completed == [0]
