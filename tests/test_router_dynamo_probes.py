"""KV-router rules pinned to Dynamo 1.6.1's own decisions.

Every expected figure below is what Dynamo 1.6.1's offline replay
(``router_mode="kv_router"``) logged for the same tiny trace: the chosen
worker's logit and the overlap it saw. Traces use trace_block_size 64 (one
hash id = one engine block) and the fixed timing model (prefill pass 10 ms,
decode pass 5 ms), so every number is checkable by hand.
"""

from __future__ import annotations

import json

import dynosim

FIXED = {"timing": "fixed", "timing_params": {"prefill_ms": 10, "decode_ms": 5}}


def req(ts, hids, out=1, isl=None):
    r = {"timestamp": ts, "hash_ids": hids, "output_length": out}
    if isl:
        r["input_length"] = isl
    return r


def run(tmp_path, rows, workers=1, engine=None, router=None, trace_block_size=64):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = dynosim.run(p, workers=workers, router_mode="kv", engine={**FIXED, **(engine or {})},
                      router=router, trace_block_size=trace_block_size)
    state = res.extra["state"]
    reqs = sorted(state.requests, key=lambda r: (r.arrival, r.isl))
    return [dict(logit=r.router_score, ov=r.router_overlap, w=r.worker) for r in reqs], state.extra["router"]


def logits(out):
    return [o["logit"] for o in out]


def test_cost_of_fresh_requests(tmp_path):
    assert logits(run(tmp_path, [req(0, [1, 2, 3])])[0]) == [6.0]
    # partial tail block: 200 tokens -> 200/64 prefill + 3 full blocks
    assert logits(run(tmp_path, [req(0, [1, 2, 3, 4], isl=200)])[0]) == [6.125]


def test_active_prefill_and_blocks(tmp_path):
    out, _ = run(tmp_path, [req(0, [1, 2, 3], out=4), req(1, [1, 2, 3], out=4)])
    assert out[1]["logit"] == 9.0  # twin still in prefill: (192+192)/64 + 3 active + 0 new
    out, _ = run(tmp_path, [req(0, [1, 2, 3]), req(20, [1, 2, 3, 4, 5], out=5), req(21, [7, 8])])
    assert out[2]["logit"] == 11.0  # the overlapped request's prefill load is isl - 64·ov
    out, _ = run(tmp_path, [req(0, [1, 2, 3]), req(20, [1, 2, 3], out=5), req(21, [9])])
    assert out[2]["logit"] == 5.0  # a fully overlapped request carries no prefill load
    out, _ = run(tmp_path, [req(0, [1, 2, 3], out=20), req(0, [1, 2, 4], out=20), req(50, [1, 2, 5])])
    assert out[2]["logit"] == 6.0  # distinct active hashes: {1,2,3,4} then +5
    out, _ = run(tmp_path, [req(0, [1], out=300), req(1000, [9])])
    assert out[1]["logit"] == 3.0  # output blocks are not tracked
    out, _ = run(tmp_path, [req(0, list(range(1, 158)), isl=10000, out=2), req(15, [999])])
    assert out[1]["logit"] == 314.25  # chunked prefill keeps its whole load until the first token


def test_pass_end_effects_precede_arrivals(tmp_path):
    out, _ = run(tmp_path, [req(0, [1, 2, 3], out=4), req(10, [1, 2, 3], out=4)])
    assert (out[1]["logit"], out[1]["ov"]) == (3.0, 3)
    assert logits(run(tmp_path, [req(0, [1, 2, 3], out=3), req(20, [7])])[0])[1] == 2.0
    assert logits(run(tmp_path, [req(0, [1, 2, 3], out=3), req(19.9, [7])])[0])[1] == 5.0


def test_indexer_sees_events_at_pass_end_and_evictions(tmp_path):
    assert run(tmp_path, [req(0, [1, 2, 3], out=4), req(1, [1, 2, 3], out=4)])[0][1]["ov"] == 0
    assert run(tmp_path, [req(0, [1, 2, 3]), req(40, [1, 2, 3])])[0][1]["ov"] == 3
    big = list(range(1, 158))
    assert run(tmp_path, [req(0, big, isl=10000, out=2), req(15, big, isl=10000)])[0][1]["ov"] == 128
    ev = {"num_gpu_blocks": 8}
    got = [run(tmp_path, [req(0, [1, 2, 3, 4]), req(20, [11, 12, 13, 14]), req(40, [21, 22]),
                          req(t, [1, 2, 3, 4])], engine=ev)[0][3]["ov"] for t in (45, 60)]
    assert got == [4, 2]


def test_trace_blocks_rechunked_at_engine_block_size(tmp_path):
    out, _ = run(tmp_path, [req(0, [1, 2], isl=600), req(50, [1, 3], isl=1000)], trace_block_size=512)
    assert (out[0]["logit"], out[1]["ov"], out[1]["logit"]) == (18.375, 8, 22.625)


def test_queue_threshold(tmp_path):
    rows = [req(0, list(range(1000 * i, 1000 * i + 128)), out=2) for i in range(40)]
    _, router = run(tmp_path, rows, engine={"num_gpu_blocks": 100000})
    assert router.queue is None  # no queue by default: all 40 routed at once
    rows = [req(0, list(range(1000 * i, 1000 * i + 128)), out=2) for i in range(3)]
    _, router = run(tmp_path, rows, router={"queue_threshold": 1.0})
    assert router.queue.enqueued == 1  # busy iff pending prefill > 1.0 × 8192: the third waits


def test_load_beats_cache(tmp_path):
    out, _ = run(tmp_path, [req(0, [1, 2, 3, 4]), req(20, [1, 2, 3, 4, 5, 6, 7, 8], out=100),
                            req(21, [1, 2, 3, 4, 9])], workers=2)
    assert out[2]["ov"] == 0


def test_non_default_weights(tmp_path):
    rows = [req(0, [1, 2, 3]), req(20, [1, 2, 3, 4, 5], out=5), req(21, [7, 8])]
    out, _ = run(tmp_path, rows, router={"overlap_score_credit": 0.5, "prefill_load_scale": 2.0})
    assert logits(out) == [9.0, 12.0, 15.0]
    out, _ = run(tmp_path, rows, router={"overlap_score_credit": 0.0, "prefill_load_scale": 0.0})
    assert logits(out) == [3.0, 5.0, 7.0]


def test_ties_spread_uniformly_over_idle_workers(tmp_path):
    chosen = {run(tmp_path, [req(0, [1, 2, 3])], workers=4, router=None)[0][0]["w"]}
    seeds = set()
    for seed in range(40):
        p = tmp_path / "t.jsonl"
        p.write_text(json.dumps(req(0, [1, 2, 3])) + "\n")
        seeds.add(int(dynosim.run(p, workers=4, router_mode="kv", engine=FIXED, trace_block_size=64,
                                  seed=seed).requests.worker[0]))
    assert chosen <= seeds and seeds == {0, 1, 2, 3}
