"""KV transfer timing between prefill and decode pools, on hand-computed cases."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dynosim.disagg.transfer import (DEFAULT_KV_SHAPE, LINK_PRESETS, Link, LinkState, ModelKVShape, TransferConfig,
                                     transfer_ms)
from dynosim.hardware.spec import HardwareSpec


def test_bytes_per_token_from_the_model_shape():
    assert DEFAULT_KV_SHAPE.bytes_per_token == 32 * 2 * 8 * 128 * 2 == 131_072   # Llama-3.1-8B bf16
    # the tiny CPU model of the live tests: 2 layers x K,V x 4 heads x 32 dims x 4 bytes (fp32)
    assert ModelKVShape(layers=2, kv_heads=4, head_dim=32, dtype="fp32").bytes_per_token == 2048


def test_hand_off_bytes_come_from_the_named_model():
    h70 = HardwareSpec(model="meta-llama/Meta-Llama-3.1-70B", system="h100_sxm", tp=4)
    assert TransferConfig().resolve(h70, h70).bytes_per_token == 80 * 2 * 8 * 128 * 2
    ds = HardwareSpec(model="deepseek-ai/DeepSeek-V3", system="h200_sxm", tp=8, ep=8, kv_quant="bf16")
    assert TransferConfig().resolve(ds, ds).bytes_per_token == 61 * (512 + 64) * 2     # MLA latent + rope key
    fp8 = HardwareSpec(model="meta-llama/Meta-Llama-3.1-8B", system="h200_sxm", kv_quant="fp8")
    assert TransferConfig().resolve(fp8, fp8).bytes_per_token == 65_536


def test_link_defaults_come_from_the_systems():
    h8 = HardwareSpec(model="meta-llama/Meta-Llama-3.1-8B", system="h200_sxm")
    h4 = HardwareSpec(model="meta-llama/Meta-Llama-3.1-8B", system="h200_sxm", tp=4)
    one_node = TransferConfig().resolve(h8, h8, total_gpus=8)          # the deployment fits one node: NVLink
    assert one_node.link.bandwidth_gbps == pytest.approx(450.0) and one_node.source.startswith("nvlink")
    across = TransferConfig().resolve(h8, h8, total_gpus=16)           # across nodes: the GPU's NIC
    assert across.link.bandwidth_gbps == pytest.approx(50.0) and across.source.startswith("rdma")
    wide = TransferConfig().resolve(h4, h4, total_gpus=16)             # four GPUs move their shards in parallel
    assert wide.link.bandwidth_gbps == pytest.approx(200.0)
    given = TransferConfig(link="tcp").resolve(h8, h8, total_gpus=16)
    assert given.link == LINK_PRESETS["tcp"]
    assert TransferConfig().resolve().link == LINK_PRESETS["rdma"]      # no hardware: the rdma preset


def test_transfer_time_matches_dynamo_example():
    # Llama-3.1-8B bf16, 8k tokens at 64 GB/s: 8192 x 131072 B / 64e9 B/s = 16.777 ms (Dynamo's mocker: ~16.8 ms)
    h = TransferConfig(bandwidth_gbps=64, latency_ms=0.0).resolve()
    assert h.delay_ms(8192) == pytest.approx(8192 * 131_072 / 64e9 * 1000) == pytest.approx(16.777, abs=1e-3)
    assert h.delay_ms(0) == 0.0


def test_presets_and_overrides():
    rdma = TransferConfig(link="rdma").resolve()
    assert rdma.link == LINK_PRESETS["rdma"]
    assert rdma.delay_ms(1000) == pytest.approx(1000 * 131_072 / 50e9 * 1000 + 0.02)
    tcp = TransferConfig(link="tcp", latency_ms=0.0).resolve()
    assert tcp.delay_ms(1000) == pytest.approx(1000 * 131_072 / 3.125e9 * 1000)
    assert TransferConfig(link="nvlink").resolve().delay_ms(1000) < rdma.delay_ms(1000) < tcp.delay_ms(1000)
    shape = ModelKVShape(layers=4, kv_heads=2, head_dim=64, dtype="fp8")
    assert TransferConfig(model=shape, bandwidth_gbps=1, latency_ms=0).resolve().delay_ms(1000) == pytest.approx(
        1000 * 4 * 2 * 2 * 64 / 1e9 * 1000)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValidationError):
        TransferConfig(model="gpt-9")
    with pytest.raises(ValidationError, match="unknown link preset"):
        TransferConfig(link="carrier-pigeon")
    with pytest.raises(ValidationError, match="unknown KV dtype"):
        ModelKVShape(layers=1, kv_heads=1, head_dim=1, dtype="fp4x")
    with pytest.raises(ValueError, match="bandwidth"):
        Link(0.0)
    with pytest.raises(ValueError, match="tokens"):
        transfer_ms(-1, 10, Link(1.0))


def test_contention_queues_transfers_on_one_link():
    cfg = TransferConfig(bandwidth_gbps=131.072, latency_ms=0.0, contention=True)   # 1 ms per 1000 tokens
    link = LinkState(cfg.resolve())
    assert link.schedule(0.0, 10_000) == pytest.approx(10.0)
    assert link.schedule(0.0, 10_000) == pytest.approx(20.0)    # waits for the first
    assert link.schedule(25.0, 5_000) == pytest.approx(30.0)    # link idle again
    assert link.transfers == 3 and link.bytes == 25_000 * 131_072 and link.busy_ms == pytest.approx(25.0)
    free = LinkState(cfg.model_copy(update={"contention": False}).resolve())
    assert [free.schedule(0.0, 10_000) for _ in range(2)] == pytest.approx([10.0, 10.0])
