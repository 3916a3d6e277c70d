"""Speculative decoding (next-n drafting): token accounting, acceptance draws, pricing and validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_request
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.engines.mocker.timing import FixedTiming


def _run(args: MockerArgs, reqs, seed=42):
    s = VllmScheduler(args, FixedTiming(10.0, 5.0), spec_seed=seed)
    for r in reqs:
        s.add(r)
    passes = []
    while s.has_work:
        res = s.step()
        passes.append((res.duration_ms, [r.rid for r in res.emitted], res.tokens))
    return s, passes


def test_every_draft_accepted_gives_bursts_of_nextn_plus_one_capped_at_the_output():
    args = MockerArgs(block_size=16, num_gpu_blocks=64, nextn=2, nextn_accept_rates=[1.0, 1.0])
    req = make_request(0, 64, 10, 16)
    s, passes = _run(args, [req])
    # the pass that ends the prefill already emits a burst (Dynamo's vLLM mocker), then 3, 3 and the last 1
    assert [p[2] for p in passes] == [[3], [3], [3], [1]]
    assert req.generated == req.osl == 10 and req.status == "done"
    assert s.drafted == 8 and s.accepted == 8
    # the prefill-ending pass is priced with a decode step too (the new request is verified in it)
    assert passes[0][0] == pytest.approx(10.0 + 5.0)
    assert s.kv.num_active == 0  # every reserved block returned


def test_no_draft_accepted_is_one_token_per_pass():
    args = MockerArgs(block_size=16, num_gpu_blocks=64, nextn=2, nextn_accept_rates=[0.0, 0.0])
    req = make_request(0, 64, 10, 16)
    s, passes = _run(args, [req])
    assert len(passes) == 10 and all(p[2] == [1] for p in passes)
    assert s.drafted == 20 and s.accepted == 0


def test_acceptance_is_a_conditional_chain_with_dynamos_default_rates():
    args = MockerArgs(block_size=16, num_gpu_blocks=4096, max_num_seqs=64, nextn=2)
    assert args.accept_rates == (0.85, 0.3)
    reqs = [make_request(i, 32, 400, 16) for i in range(40)]
    s, passes = _run(args, reqs)
    per_step = [t for p in passes for t in (p[2] or [])]

    # P(1 draft kept) = 0.85, P(2) = 0.85 · 0.3: 1 + 0.85 + 0.255 = 2.105 tokens per step (before the cap)
    assert s.accepted / (s.drafted / 2) == pytest.approx(0.85 + 0.255, abs=0.03)
    assert set(per_step) == {1, 2, 3}
    assert all(r.generated == 400 for r in reqs)
    # seeded: the same seed gives the same bursts, another seed others
    s2, passes2 = _run(args, [make_request(i, 32, 400, 16) for i in range(40)])
    s3, passes3 = _run(args, [make_request(i, 32, 400, 16) for i in range(40)], seed=7)
    assert [p[2] for p in passes2] == [p[2] for p in passes]
    assert [p[2] for p in passes3] != [p[2] for p in passes]


def test_rates_are_padded_and_validated():
    assert MockerArgs(nextn=3, nextn_accept_rates=[0.5]).accept_rates == (0.5, 0.0, 0.0)
    assert MockerArgs(nextn=1).accept_rates == (0.85,)
    with pytest.raises(ValueError, match="needs nextn >= 1"):
        MockerArgs(nextn_accept_rates=[0.5])
    with pytest.raises(ValueError, match=r"nextn_accept_rates\[1\]"):
        MockerArgs(nextn=2, nextn_accept_rates=[0.5, 1.5])
    with pytest.raises(ValueError):
        MockerArgs(nextn=6)


def test_simulation_reports_acceptance_and_zero_gaps(tmp_path):
    import dynosim
    from dynosim.config import RunConfig

    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps({"timestamp": 100 * i, "input_length": 500, "output_length": 50,
                                     "hash_ids": [i]}) + "\n" for i in range(20)))
    base = dynosim.run(p, config=RunConfig(workers=2))
    spec = dynosim.run(p, config=RunConfig(workers=2, engine=MockerArgs(nextn=2)))
    sp = spec.summary["speculative"]
    assert sp["nextn"] == 2 and 1.8 < sp["tokens_per_step"] < 2.4
    # more tokens per pass: shorter requests; every request still gets all its tokens
    assert spec.summary["e2e_ms"]["mean"] < base.summary["e2e_ms"]["mean"]
    assert spec.summary["requests"]["completed"] == 20
    assert spec.summary["token_gap_ms"]["p50"] == 0.0   # the accepted drafts arrive with the pass's token
    again = dynosim.run(p, config=RunConfig(workers=2, engine=MockerArgs(nextn=2)))
    assert np.array_equal(again.requests["e2e_ms"].to_numpy(), spec.requests["e2e_ms"].to_numpy())


def test_a_prefix_hit_recomputes_its_last_block_with_drafting():
    """Dynamo 1.6.1 with aic_nextn: a cached prefix of 960 tokens reuses 896 (one 64-token block less)."""
    reused = {}
    for nextn in (0, 2):
        args = MockerArgs(block_size=64, num_gpu_blocks=256, nextn=nextn)
        s = VllmScheduler(args, FixedTiming(10.0, 5.0))
        first, second = make_request(0, 1000, 2, 64, tag=7), make_request(1, 1000, 2, 64, tag=7)
        s.add(first)
        while s.has_work:
            s.step()
        s.add(second)
        while s.has_work:
            s.step()
        reused[nextn] = second.reused
    assert reused == {0: 960, 2: 896}
