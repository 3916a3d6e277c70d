"""The roofline pass-time model (``--timing roofline``): hand-checked, monotone, and near the database."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynosim.hardware.roofline import (ALLREDUCE_LATENCY_S, MEM_BW_EFFICIENCY, MFU, PASS_OVERHEAD_MS,
                                       RooflineTiming)
from dynosim.hardware.spec import HardwareSpec

LLAMA8 = "meta-llama/Meta-Llama-3.1-8B"
HW8 = HardwareSpec(model=LLAMA8, system="h200_sxm")
MOE = HardwareSpec(model="Qwen/Qwen3-30B-A3B", system="h200_sxm")


@pytest.fixture(scope="module")
def r8() -> RooflineTiming:
    return RooflineTiming(HW8)


@pytest.fixture(scope="module")
def moe() -> RooflineTiming:
    return RooflineTiming(MOE)


def test_interface(r8):
    assert RooflineTiming.name == "roofline"
    assert RooflineTiming.whole_pass is True
    assert RooflineTiming.pass_overhead_ms == 0.0
    assert r8.source == "roofline (uncalibrated)"
    assert r8.hw == HW8 and r8.nextn == 0


def test_decode_pass_by_hand(r8):
    """Llama-3.1-8B, h200_sxm, TP1, bf16: 32 requests decoding at 8000 tokens of context each."""
    L, h, H, kvh, d, inter, V = 32, 4096, 32, 8, 128, 14336, 128256
    attn = h * H * d * 2 + h * kvh * d * 2            # q, o + k, v projections
    mlp = 3 * h * inter                                # gate, up, down
    dense = L * (attn + mlp)                           # 6,979,321,856
    assert dense == 6_979_321_856
    lm_head = V * h
    n, kv = 32, 32 * 8000
    peak, bw = 989e12, 4.8e12                          # h200_sxm bf16 tensor FLOP/s, HBM bytes/s
    flops = 2 * dense * n + 2 * lm_head * n + 4 * L * H * d * kv
    compute_s = flops / (peak * MFU)
    weight_bytes = (dense + 2 * lm_head) * 2           # untied embeddings + LM head, bf16
    kv_per_token = L * 2 * kvh * d * 2                 # 131,072 bytes
    memory_s = (weight_bytes + (kv + n) * kv_per_token) / (bw * MEM_BW_EFFICIENCY)
    assert memory_s > compute_s                        # decode is bandwidth bound
    expected_ms = memory_s * 1e3 + PASS_OVERHEAD_MS    # TP1: no collectives
    assert expected_ms == pytest.approx(13.92, abs=0.01)
    assert r8.pass_ms(0, 0, n, kv) == pytest.approx(expected_ms, rel=1e-9)
    assert r8.decode_ms(kv, 8000.0, 10**6) == pytest.approx(expected_ms, rel=1e-9)


def test_prefill_pass_by_hand_tp2():
    """A TP2 prefill adds two all-reduces per layer (ring) to the compute-bound GEMM time."""
    r = RooflineTiming(HardwareSpec(model=LLAMA8, system="h200_sxm", tp=2))
    L, h, H, kvh, d, inter, V = 32, 4096, 32, 8, 128, 14336, 128256
    dense = L * (h * H * d * 2 + h * kvh * d * 2 + 3 * h * inter)
    t = 4096
    flops = (2 * dense * t + 2 * V * h * 1 + 4 * L * H * d * t * t / 2) / 2
    compute_s = flops / (989e12 * MFU)
    ar_s = t * h * 2 * (2 * 1 / 2) / 450e9 + ALLREDUCE_LATENCY_S
    expected_ms = (compute_s + 2 * L * ar_s) * 1e3 + PASS_OVERHEAD_MS
    assert r.pass_ms(1, t, 0, 0) == pytest.approx(expected_ms, rel=1e-9)


def test_zero_work_is_free(r8, moe):
    for r in (r8, moe):
        assert r.pass_ms(0, 0, 0, 0) == 0.0
        assert r.prefill_ms(4, 100, 100) == 0.0
        assert r.prefill_ms(0, 100, 0) == 0.0
        assert r.decode_ms_vec(np.zeros(0, dtype=np.int64), np.zeros(0), 1000).shape == (0,)


@given(p=st.integers(0, 20000), dp=st.integers(1, 4096), nd=st.integers(0, 256), dnd=st.integers(1, 64),
       ctx=st.integers(1, 32000), dkv=st.integers(1, 100000))
def test_more_work_is_never_faster(r8, moe, p, dp, nd, dnd, ctx, dkv):
    for r in (r8, moe):
        kv = nd * ctx
        base = r.pass_ms(1 if p else 0, p, nd, kv)
        assert r.pass_ms(1, p + dp, nd, kv) >= base                 # more prefill tokens
        assert r.pass_ms(1 if p else 0, p, nd, kv + dkv) >= base    # more KV read
        assert r.pass_ms(1 if p else 0, p, nd + dnd, kv) >= base    # more decoders (same KV)
        assert r.pass_ms(1 if p else 0, p, nd + dnd, kv + dnd * ctx) >= base


def test_more_draft_tokens_are_never_faster():
    plain, mtp = RooflineTiming(HW8), RooflineTiming(HW8, nextn=3)
    for n in (1, 32, 256):
        assert mtp.pass_ms(0, 0, n, n * 4000) >= plain.pass_ms(0, 0, n, n * 4000)
    # compute bound: 4 tokens verified per request cost about 4 decodes' FLOPs
    assert mtp.pass_ms(0, 0, 2048, 2048 * 100) > 2 * plain.pass_ms(0, 0, 2048, 2048 * 100)


def test_tp2_prefill_is_faster_than_tp1():
    tp1 = RooflineTiming(HW8)
    tp2 = RooflineTiming(HardwareSpec(model=LLAMA8, system="h200_sxm", tp=2))
    for t in (4096, 8192, 16384):
        assert tp2.pass_ms(1, t, 0, 0) < 0.65 * tp1.pass_ms(1, t, 0, 0)


def test_pipeline_divides_no_time():
    """PP: the stages run one after another, so a pass costs about what TP alone costs (plus hand-offs)."""
    hw = dict(model="meta-llama/Meta-Llama-3.1-70B", system="h100_sxm", tp=4)
    tp4, tp4pp2 = RooflineTiming(HardwareSpec(**hw)), RooflineTiming(HardwareSpec(**hw, pp=2))
    for c in ((1, 4096, 0, 0), (0, 0, 32, 32 * 8000)):
        assert tp4pp2.pass_ms(*c) >= tp4.pass_ms(*c)
        assert tp4pp2.pass_ms(*c) == pytest.approx(tp4.pass_ms(*c), rel=0.02)


@pytest.mark.parametrize("nextn", [0, 2])
def test_decode_vec_matches_decode(nextn):
    for hw in (HW8, MOE, HardwareSpec(model="Qwen/Qwen3-30B-A3B", system="h200_sxm", tp=2, dp=2, ep=4)):
        r = RooflineTiming(hw, nextn)
        for n, ctx in ((1, 8000.0), (32, 1500.5), (128, 8000.0)):
            active = np.array([n * ctx + k * n for k in range(50)], dtype=np.int64)
            means = active / n
            vec = r.decode_ms_vec(active, means, 10**7)
            one = np.array([r.decode_ms(int(a), float(m), 10**7) for a, m in zip(active, means)])
            np.testing.assert_allclose(vec, one, rtol=1e-12)
            assert np.all(np.diff(vec) >= 0)
            assert one[0] == pytest.approx(r.pass_ms(0, 0, n, int(active[0])), rel=1e-12)


def test_prefill_ms_is_the_pass(r8):
    assert r8.prefill_ms(4, 1000, 200) == r8.pass_ms(4, 3200, 0, 0)


def test_moe_decode_reads_only_the_experts_hit(moe):
    """Qwen3-30B-A3B (128 experts, 8 per token): a small decode batch touches few experts."""
    dense = RooflineTiming(HardwareSpec(model="Qwen/Qwen3-32B", system="h200_sxm"))
    assert moe.shape.total_params == pytest.approx(dense.shape.total_params, rel=0.1)  # similar total size
    for n in (1, 4):
        assert moe.pass_ms(0, 0, n, n * 2000) < 0.5 * dense.pass_ms(0, 0, n, n * 2000)
    # all weights read: what 128 / 8 = 16 tokens already hit, versus one token's 8 of 128 experts
    all_read_ms = moe._weight_bytes / (moe.system.mem_bw * MEM_BW_EFFICIENCY) * 1e3
    assert moe.pass_ms(0, 0, 1, 1) < 0.25 * all_read_ms
    assert moe.pass_ms(0, 0, 16, 16) > all_read_ms


@pytest.fixture(scope="module")
def database():
    from dynosim.hardware.aic import AicTiming

    return AicTiming(HardwareSpec(model=LLAMA8, system="h200_sxm"))


@pytest.mark.parametrize("shape,db_ms", [((1, 4096, 0, 0), 92.8), ((0, 0, 32, 32 * 8000), 13.2)])
def test_within_a_factor_of_two_of_the_database(r8, database, shape, db_ms):
    measured = database.direct_ms(*shape)
    assert measured == pytest.approx(db_ms, rel=0.05)   # the database's price has not moved under us
    est = r8.pass_ms(*shape)
    assert measured / 2 <= est <= measured * 2
