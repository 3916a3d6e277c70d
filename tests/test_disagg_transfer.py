"""KV transfer timing between prefill and decode pools, on hand-computed cases."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dynosim.disagg.transfer import (LINK_PRESETS, MODEL_PRESETS, Link, LinkState, ModelKVShape, TransferConfig,
                                     transfer_ms)


def test_bytes_per_token_from_the_model_shape():
    assert MODEL_PRESETS["llama-3.1-8b"].bytes_per_token == 32 * 2 * 8 * 128 * 2 == 131_072
    assert MODEL_PRESETS["llama-3.1-70b"].bytes_per_token == 80 * 2 * 8 * 128 * 2
    # the tiny CPU model of the live tests: 2 layers x K,V x 4 heads x 32 dims x 4 bytes (fp32)
    assert ModelKVShape(layers=2, kv_heads=4, head_dim=32, dtype="fp32").bytes_per_token == 2048


def test_transfer_time_matches_dynamo_example():
    # Llama-3.1-8B bf16, 8k tokens at 64 GB/s: 8192 x 131072 B / 64e9 B/s = 16.777 ms (Dynamo's mocker: ~16.8 ms)
    cfg = TransferConfig(model="llama-3.1-8b", link=None, bandwidth_gbps=64)
    assert cfg.delay_ms(8192) == pytest.approx(8192 * 131_072 / 64e9 * 1000) == pytest.approx(16.777, abs=1e-3)
    assert cfg.delay_ms(0) == 0.0


def test_presets_and_overrides():
    rdma = TransferConfig(link="rdma")
    assert rdma.resolved_link == LINK_PRESETS["rdma"]
    assert rdma.delay_ms(1000) == pytest.approx(1000 * 131_072 / 50e9 * 1000 + 0.02)
    tcp = TransferConfig(link="tcp", latency_ms=0.0)
    assert tcp.delay_ms(1000) == pytest.approx(1000 * 131_072 / 3.125e9 * 1000)
    assert TransferConfig(link="nvlink").delay_ms(1000) < rdma.delay_ms(1000) < tcp.delay_ms(1000)
    shape = ModelKVShape(layers=4, kv_heads=2, head_dim=64, dtype="fp8")
    assert TransferConfig(model=shape, link=None, bandwidth_gbps=1).delay_ms(1000) == pytest.approx(
        1000 * 4 * 2 * 2 * 64 / 1e9 * 1000)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValidationError, match="unknown model preset"):
        TransferConfig(model="gpt-9")
    with pytest.raises(ValidationError, match="unknown link preset"):
        TransferConfig(link="carrier-pigeon")
    with pytest.raises(ValidationError, match="give a link preset or bandwidth_gbps"):
        TransferConfig(link=None)
    with pytest.raises(ValidationError, match="unknown KV dtype"):
        ModelKVShape(layers=1, kv_heads=1, head_dim=1, dtype="fp4x")
    with pytest.raises(ValueError, match="bandwidth"):
        Link(0.0)
    with pytest.raises(ValueError, match="tokens"):
        transfer_ms(-1, 10, Link(1.0))


def test_contention_queues_transfers_on_one_link():
    cfg = TransferConfig(link=None, bandwidth_gbps=131.072, contention=True)   # 1 ms per 1000 tokens
    link = LinkState(cfg)
    assert link.schedule(0.0, 10_000) == pytest.approx(10.0)
    assert link.schedule(0.0, 10_000) == pytest.approx(20.0)    # waits for the first
    assert link.schedule(25.0, 5_000) == pytest.approx(30.0)    # link idle again
    assert link.transfers == 3 and link.bytes == 25_000 * 131_072 and link.busy_ms == pytest.approx(25.0)
    free = LinkState(cfg.model_copy(update={"contention": False}))
    assert [free.schedule(0.0, 10_000) for _ in range(2)] == pytest.approx([10.0, 10.0])
