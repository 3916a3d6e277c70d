"""VllmScheduler on hand-built requests: budget, timing of a pass, admission, prefix cap, preemption.

Expected durations are computed from Dynamo's polynomial written out in
conftest (not from dynosim's timing module) and rounded to whole ns, as
Dynamo's engine clock does. Figures quoted as literals are Dynamo 1.6.1's own
(notes §3, appendix B).
"""

from __future__ import annotations

import pytest

from conftest import drive, fifo_at_the_brink, make_request, ns, poly_decode, poly_prefill
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.scheduler import VllmScheduler

TOTAL = 16384 * 64  # default KV tokens: decode utilisation is ctx / TOTAL


def dec(ctx: int, total: int = TOTAL) -> float:
    return ns(poly_decode(ctx, total))


def pre(t: int) -> float:
    return ns(poly_prefill(t))


def sched(**kw) -> VllmScheduler:
    return VllmScheduler(MockerArgs(**kw))


# ---------------------------------------------------------------------------
# timing of a pass


def test_single_512_token_prompt_matches_dynamo_figures():
    s = sched()
    r = make_request(0, 512, 4, 64)
    d = drive(s, [(0.0, r)])
    assert d.first(0) == pytest.approx(24.385704, abs=1e-9)  # Dynamo 1.6.1 TTFT
    gaps = d.gaps(0)
    assert gaps[0] == pytest.approx(5.766417, abs=1e-9)      # Dynamo 1.6.1 per-token decode
    # decode is timed on the context length, which grows by one per token
    assert gaps == pytest.approx([dec(513), dec(514), dec(515)], abs=1e-9)
    assert gaps[0] < gaps[1] < gaps[2]
    assert d.completed == [0] and r.status == "done" and r.generated == 4
    assert len(d.passes) == 4  # the first token needs no extra pass


def test_first_token_costs_no_decode_time():
    for isl in (1, 128, 1000, 8192):
        s = sched()
        d = drive(s, [(0.0, make_request(0, isl, 2, 64))])
        assert d.first(0) == pre(isl)
        assert d.passes[0][1] == pre(isl)
    assert pre(128) == pytest.approx(18.451798, abs=1e-9)  # Dynamo probe "single"


def test_two_prompts_share_the_token_budget_with_chunked_prefill():
    s = sched()
    a, b = make_request(0, 6758, 3, 64), make_request(1, 6760, 3, 64)
    s.add(a)
    s.add(b)
    res = s.step()
    # A whole (6758) + B's first chunk (1434): T = 2 * (8192 // 2) = 8192
    assert a.computed == 6758 and b.computed == 8192 - 6758
    assert res.prefill_tokens == 8192
    assert res.duration_ms == pytest.approx(169.136918, abs=1e-9) and res.duration_ms == pre(8192)
    assert res.emitted == [a] and b.generated == 0  # only A's prompt is complete
    res2 = s.step()
    # B's remaining 5326 tokens, plus A's first decode step (A's context 6759)
    assert b.computed == 6760 and res2.prefill_tokens == 5326
    assert res2.duration_ms == pytest.approx(pre(5326) + dec(6759), abs=1e-9)
    assert set(map(id, res2.emitted)) == {id(a), id(b)}


def test_batched_prefill_uses_integer_means():
    s = sched()
    s.add(make_request(0, 1001, 2, 64))
    s.add(make_request(1, 3000, 2, 64))
    # Dynamo probe BATCH: poly(2 * (4001 // 2)) = poly(4000), not poly(4001)
    assert s.step().duration_ms == pre(4000)


def test_long_prompt_is_chunked_at_max_num_batched_tokens():
    s = sched()
    d = drive(s, [(0.0, make_request(0, 10000, 1, 64))])
    assert [p[1] for p in d.passes] == [pre(8192), pre(1808)]  # Dynamo probe CHUNK
    assert d.first(0) == pytest.approx(pre(8192) + pre(1808), abs=1e-9)
    s = sched(max_num_batched_tokens=1000, max_num_seqs=16)
    d = drive(s, [(0.0, make_request(0, 2500, 1, 64))])
    assert [p[1] for p in d.passes] == [pre(1000), pre(1000), pre(500)]


def test_decode_step_is_timed_on_the_summed_context_of_decoding_requests():
    s = sched()
    d = drive(s, [(0.0, make_request(0, 512, 3, 64)), (0.0, make_request(1, 300, 3, 64))])
    assert d.passes[0][1] == pre(812)
    assert d.passes[1][1] == dec(513 + 301)
    assert d.passes[2][1] == dec(514 + 302)
    assert d.tokens[0] == d.tokens[1]


def test_mixed_pass_costs_prefill_plus_decode_of_the_others_only():
    s = sched()
    a = make_request(0, 512, 10, 64)
    b = make_request(1, 4096, 2, 64)
    d = drive(s, [(0.0, a), (30.0, b)])
    # B arrives mid-decode and joins the next pass start; that pass prefills B and decodes A
    start, dur = next(p for p in d.passes if p[0] >= 30.0)
    a_ctx = 512 + sum(1 for t in d.tokens[0] if t <= start)
    assert dur == pytest.approx(pre(4096) + dec(a_ctx), abs=1e-9)
    assert d.first(1) == pytest.approx(start + dur, abs=1e-9)
    assert start + dur in d.tokens[0]  # A's token of that pass is stamped at the same end


def test_speedup_ratios_divide_prefill_and_decode():
    s = sched(speedup_ratio=2.0, decode_speedup_ratio=4.0)
    d = drive(s, [(0.0, make_request(0, 512, 2, 64))])
    assert d.passes[0][1] == ns(poly_prefill(512) / 2.0)
    assert d.passes[1][1] == ns(poly_decode(513, TOTAL) / 8.0)


# ---------------------------------------------------------------------------
# admission


def test_max_num_seqs_caps_running_requests():
    s = sched(max_num_seqs=2)
    seen = []
    reqs = [make_request(i, 256, 5, 64) for i in range(3)]
    d = drive(s, [(0.0, r) for r in reqs], on_pass=lambda *_: seen.append(len(s.running)))
    assert max(seen) <= 2
    # the third is admitted by the pass that starts when the first two complete
    done_at = d.tokens[0][-1]
    assert d.tokens[1][-1] == done_at
    assert d.first(2) == pytest.approx(done_at + pre(256), abs=1e-9)
    assert d.completed == [0, 1, 2]


def test_head_of_line_blocking_at_the_admission_gate():
    s = sched(num_gpu_blocks=10, max_num_seqs=8, max_num_batched_tokens=1024)
    a = make_request(0, 320, 30, 64)  # decoding: 5 full blocks + 1 partial = 6 of 10
    b = make_request(1, 320, 2, 64)   # needs 5 > 4 available
    c = make_request(2, 64, 2, 64)    # needs 1: would fit, but queues behind B
    d = drive(s, [(0.0, a), (30.0, b), (30.5, c)])
    a_done = d.tokens[0][-1]
    assert d.first(1) == d.first(2) == pytest.approx(a_done + pre(320 + 64), abs=1e-9)
    assert b.reused == c.reused == 0


def test_head_of_line_gate_counts_inactive_blocks_as_available():
    s = sched(num_gpu_blocks=10, max_num_seqs=8, max_num_batched_tokens=1024)
    first = make_request(0, 640, 1, 64)  # fills all 10 blocks, then releases them (cached)
    second = make_request(1, 640, 1, 64)
    d = drive(s, [(0.0, first), (100.0, second)])
    assert d.first(1) == pytest.approx(100.0 + pre(640), abs=1e-9)
    assert s.kv.removed_events == 1 and len(s.kv.inactive) == 10


def test_prompt_larger_than_the_cache_is_rejected_with_a_reason():
    s = sched(num_gpu_blocks=10)
    big = make_request(0, 11 * 64, 4, 64)
    ok = make_request(1, 9 * 64, 65, 64)  # prompt + output fill exactly the whole cache
    s.add(big)
    s.add(ok)
    res = s.step()
    assert res.failed == [big]
    assert big.status == "failed" and "11" in big.failure and "10" in big.failure
    assert big not in s.running and big not in s.waiting
    assert s.running == [ok] and ok.computed == 576
    d = drive(s)
    assert d.completed == [1] and ok.status == "done"


def test_chunked_prefill_disabled_waits_for_a_whole_prompt_budget():
    s = sched(enable_chunked_prefill=False)
    a, b = make_request(0, 6000, 3, 64), make_request(1, 6000, 3, 64)
    d = drive(s, [(0.0, a), (0.0, b)])
    assert d.passes[0][1] == pre(6000)  # B does not fit the remaining 2192 tokens
    assert d.passes[1][1] == pytest.approx(pre(6000) + dec(6001), abs=1e-9)
    assert d.first(1) == pytest.approx(d.passes[1][0] + d.passes[1][1], abs=1e-9)
    s = sched()
    d = drive(s, [(0.0, make_request(0, 6000, 3, 64)), (0.0, make_request(1, 6000, 3, 64))])
    assert d.passes[0][1] == pre(8192)  # chunked: B's first 2192 ride along


# ---------------------------------------------------------------------------
# prefix cache


@pytest.mark.parametrize("isl, reused, new_tokens", [(256, 192, 64), (250, 192, 58), (200, 192, 8)])
def test_vllm_prefix_hit_cap_recomputes_at_least_one_token(isl, reused, new_tokens):
    # Dynamo probe "prefix": a cached 256-token prompt, then a prompt with the same blocks
    s = sched()
    first = make_request(0, 256, 1, 64, tag=7)
    d = drive(s, [(0.0, first)])
    again = make_request(1, isl, 2, 64, tag=7)
    d = drive(s, [(1000.0, again)], state=d)
    assert again.reused == again.first_reused == reused
    assert d.first(1) == pytest.approx(1000.0 + pre(new_tokens), abs=1e-9)


def test_partial_prefix_hit_reuses_only_the_shared_leading_blocks():
    s = sched()
    a = make_request(0, 512, 1, 64, prefix=(1, 2, 3))
    b = make_request(1, 512, 1, 64, prefix=(1, 2, 9))  # diverges at block 2
    c = make_request(2, 512, 1, 64, prefix=(5, 2, 3))  # diverges at block 0
    d = drive(s, [(0.0, a), (100.0, b), (200.0, c)])
    assert (a.reused, b.reused, c.reused) == (0, 128, 0)
    assert d.first(1) == pytest.approx(100.0 + pre(512 - 128), abs=1e-9)


def test_blocks_computed_earlier_in_the_same_pass_are_hit():
    s = sched()
    a = make_request(0, 256, 1, 64, tag=3)
    b = make_request(1, 256, 1, 64, tag=3)
    s.add(a)
    s.add(b)
    res = s.step()
    assert (a.reused, b.reused) == (0, 192)
    assert res.duration_ms == pre(256 + 64)


def test_no_prefix_caching_means_no_reuse_and_no_events():
    events = []
    s = VllmScheduler(MockerArgs(enable_prefix_caching=False), sink=events.append)
    a = make_request(0, 256, 2, 64, tag=3)
    b = make_request(1, 256, 2, 64, tag=3)
    d = drive(s, [(0.0, a), (500.0, b)])
    assert a.reused == b.reused == 0
    assert d.first(1) - 500.0 == pytest.approx(pre(256), abs=1e-9)
    assert events == []
    with_cache = sched()
    a2, b2 = make_request(0, 256, 2, 64, tag=3), make_request(1, 256, 2, 64, tag=3)
    drive(with_cache, [(0.0, a2), (500.0, b2)])
    assert b2.reused == 192


def test_output_blocks_are_private_and_freed_into_the_cache():
    events = []
    s = VllmScheduler(MockerArgs(block_size=16, num_gpu_blocks=64), sink=events.append)
    a = make_request(0, 32, 40, 16, tag=1)
    drive(s, [(0.0, a)])
    # 32 prompt + 39 computed output tokens: 4 full blocks (2 prompt, 2 output) + 1 partial, all released
    assert s.kv.active == {} and s.kv.n_partial == 0 and len(s.kv.inactive) == 4
    stored = [h for kind, hs, _ in events if kind == "stored" for h in hs]
    assert stored[:2] == a.seq_hashes and len(stored) == 4
    b = make_request(1, 80, 2, 16, prefix=tuple(a.seq_hashes))  # same prompt blocks, then new ones
    drive(s, [(1000.0, b)])
    assert b.reused == 32  # output blocks of A never match B's prompt


# ---------------------------------------------------------------------------
# preemption


def test_lifo_preemption_dynamo_probe():
    """Dynamo probe PREEMPT: 10 blocks; A 384 tokens out 20, B 256 tokens out 20."""
    s = sched(num_gpu_blocks=10)
    a = make_request(0, 384, 20, 64)
    b = make_request(1, 256, 20, 64)
    s.add(a)
    s.add(b)
    s.step()  # both prefilled; the cache is full (6 + 4 blocks)
    assert s.kv.num_active == 10 and a.generated == b.generated == 1
    res = s.step()  # A's dangling token needs a 7th block: B, the newest, is preempted
    assert res.preempted == 1 and s.num_preemptions == 1
    assert s.running == [a] and list(s.waiting) == [b]
    assert b.status == "waiting" and b.computed == 0 and b.blocks == [] and not b.partial
    assert b.generated == 1 and b.preemptions == 1  # keeps its output
    assert res.emitted == [a]
    d = drive(s)
    a_done = d.tokens[0][-1]
    # B waits for A (its 257-token sequence needs 5 blocks), then recomputes 65 tokens:
    # 64 prompt tokens (192 hit) + its 1 output token; the pass also decodes B (len 257)
    assert d.first(1) == pytest.approx(a_done + pre(64) + dec(257, total=640), abs=1e-9)
    assert b.reused == 192 and b.first_reused == 0
    assert a.status == b.status == "done" and a.generated == b.generated == 20
    assert sorted(d.completed) == [0, 1]


def test_lifo_victim_is_the_newest_running_request_and_goes_to_the_front():
    s = sched(num_gpu_blocks=10, max_num_seqs=8)
    a = make_request(0, 256, 30, 64)  # 4 blocks
    b = make_request(1, 192, 30, 64)  # 3 blocks
    c = make_request(2, 192, 30, 64)  # 3 blocks: the cache is full
    w = make_request(3, 64, 5, 64)    # waits: no room
    for r in (a, b, c, w):
        s.add(r)
    s.step()
    assert s.running == [a, b, c] and list(s.waiting) == [w]
    res = s.step()  # A needs a block first: C (newest) goes, B keeps running
    assert res.preempted == 1
    assert s.running == [a, b] and list(s.waiting) == [c, w]
    assert c.generated == 1 and c.computed == 0
    d = drive(s)
    assert sorted(d.completed) == [0, 1, 2, 3]
    assert all(r.generated == r.osl for r in (a, b, c, w))
    assert c.preemptions >= 1 and a.preemptions == 0


def test_fifo_victim_is_the_oldest_running_request_even_if_already_scheduled():
    s, x, y, p = fifo_at_the_brink()
    assert s.running == [x, y, p] and p.computed == 124
    res = s.step()  # X and Y decode, then P's chunk needs blocks: X (oldest) is preempted
    assert res.preempted == 1 and s.running == [y, p] and list(s.waiting) == [x]
    assert x.computed == 0 and x.blocks == [] and x.generated == 16
    assert res.emitted == [y]  # X's decode of this pass is undone: no token
    # the pass costs P's 62-token chunk plus Y's decode only
    assert res.duration_ms == pytest.approx(pre(62) + dec(y.seq_len - 1, total=15 * 16), abs=1e-9)
    d = drive(s)
    assert sorted(d.completed) == [0, 1, 2]


def test_fifo_self_preemption_lets_the_rest_of_the_batch_run():
    s = sched(block_size=16, num_gpu_blocks=4, max_num_seqs=4, max_num_batched_tokens=64, preemption_mode="fifo")
    x, y = make_request(0, 32, 5, 16), make_request(1, 32, 5, 16)
    s.add(x)
    s.add(y)
    s.step()  # both prefilled: the 4 blocks are full
    res = s.step()  # X (oldest) needs a block and is its own victim; Y still runs in this pass
    assert res.preempted == 1 and list(s.waiting) == [x] and s.running == [y]
    assert res.emitted == [y] and res.duration_ms > 0
    d = drive(s)
    assert sorted(d.completed) == [0, 1] and x.generated == y.generated == 5


def test_without_chunking_a_prompt_over_the_budget_is_rejected_not_stuck():
    s = sched(enable_chunked_prefill=False, max_num_batched_tokens=1024, max_num_seqs=8)
    big = make_request(0, 2000, 3, 64)
    small = make_request(1, 100, 3, 64)
    d = drive(s, [(0.0, big), (0.0, small)])
    assert d.failed == [0] and big.status == "failed" and "max_num_batched_tokens" in big.failure
    assert d.completed == [1] and d.first(1) == pre(100)
    # over the budget but mostly cached: only the uncached part must fit one pass
    s = sched(enable_chunked_prefill=False, max_num_batched_tokens=1024, max_num_seqs=8)
    warm = make_request(0, 1024, 1, 64, tag=5)
    long = make_request(1, 1500, 2, 64, prefix=tuple(warm.seq_hashes))
    d = drive(s, [(0.0, warm), (100.0, long)])
    assert d.failed == [] and long.status == "done" and long.reused == 1024
    assert d.first(1) == pytest.approx(100.0 + pre(1500 - 1024), abs=1e-9)


def test_output_recompute_with_a_cached_prompt_takes_zero_time_but_progresses():
    s = sched(block_size=16, num_gpu_blocks=20, max_num_seqs=4, max_num_batched_tokens=64)
    a, b = make_request(0, 32, 200, 16), make_request(1, 32, 150, 16)
    zero = []
    d = drive(s, [(0.0, a), (0.0, b)], on_pass=lambda start, end, res: zero.append(res) if end == start else None)
    assert b.preemptions == 1 and b.reused == 32
    # B's readmission recomputes only output tokens (prompt fully cached): no prefill time, and
    # alone on the engine no decode either until its sequence is complete
    assert zero and all(r.scheduled_tokens == 64 and not r.emitted and r.prefill_tokens == 0 for r in zero)
    assert sorted(d.completed) == [0, 1]
