"""Named hardware: memory arithmetic by hand, name errors, database pricing, TP sweeps, the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dynosim.cli import app
from dynosim.config import DisaggConfig, RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.hardware.catalog import HardwareError, resolve_backend, system_spec
from dynosim.hardware.memory import weights_bytes_per_gpu, worker_memory
from dynosim.hardware.spec import HardwareSpec

L70 = "meta-llama/Meta-Llama-3.1-70B"
L8 = "meta-llama/Meta-Llama-3.1-8B"
DSV3 = "deepseek-ai/DeepSeek-V3"


def test_gqa_memory_by_hand_llama_70b_tp4_h100():
    hw = HardwareSpec(model=L70, system="h100_sxm", tp=4)
    # parameters: embeddings + LM head (bf16), attention (q, o: 8192·64·128 each; k, v: 8192·8·128 each), MLP
    embed = 128_256 * 8192 * 2
    attn = 80 * (8192 * 64 * 128 * 2 + 8192 * 8 * 128 * 2)
    mlp = 80 * 3 * 8192 * 28_672
    weights = ((attn + mlp) * 2 + embed * 2) / 4          # bf16, split over TP4
    assert weights == 35_276_193_792
    assert weights_bytes_per_gpu(hw) == pytest.approx(weights)
    # reserve: runtime allowance + NCCL buffers (TP4) + activations of an 8192-token pass + logits of 256 sequences
    reserve = 3_758_096_384 + 411_041_792 + 8192 * (4 * 8192 + 2 * 28_672 / 4) * 2 + 256 * 128_256 * 4 / 4
    usable = 85_899_345_920 * 0.9
    kv_per_token_per_gpu = 80 * 2 * (8 // 4) * 128 * 2    # 2 of the 8 KV heads per GPU, bf16
    tokens = int((usable - weights - reserve) // kv_per_token_per_gpu)
    mem = worker_memory(hw, block_size=64)
    assert mem.kv_bytes_per_token_per_gpu == kv_per_token_per_gpu == 81_920
    assert mem.kv_bytes_per_token == 80 * 2 * 8 * 128 * 2
    assert mem.kv_tokens_per_worker == tokens == 452_386
    assert mem.kv_blocks_per_worker == tokens // 64 == 7068
    assert mem.gpus_per_worker == 4


def test_mla_memory_by_hand_deepseek_v3_tp8_ep8_h200():
    hw = HardwareSpec(model=DSV3, system="h200_sxm", tp=8, ep=8, kv_quant="bf16")
    h, heads = 7168, 128
    q = h * 1536 + 1536 * heads * (128 + 64)                               # q LoRA down, up (nope + rope)
    kv = h * (512 + 64) + 512 * heads * (128 + 128)                         # latent + rope key, up to k_nope and v
    o = heads * 128 * h
    attention = 61 * (q + kv + o)
    dense_mlp = 3 * 3 * h * 18_432                                          # first 3 layers are dense
    shared = 58 * (3 * h * 2048 + h * 256)                                  # one shared expert + router per MoE layer
    experts = 58 * 256 * 3 * h * 2048
    embed = 129_280 * h * 2
    assert attention + dense_mlp + shared + experts + embed == 671_025_397_760   # DeepSeek-V3's 671 B
    weights = (attention + dense_mlp + shared) * 1 / 8 + experts * 1 / 8 + embed * 2 / 8   # fp8 weights, bf16 embed
    assert weights_bytes_per_gpu(hw) == pytest.approx(weights)
    mem = worker_memory(hw, block_size=64)
    # MLA caches one 512-wide latent + a 64-wide rope key per layer, whole on every TP rank
    assert mem.kv_bytes_per_token_per_gpu == mem.kv_bytes_per_token == 61 * (512 + 64) * 2 == 70_272
    assert mem.gpus_per_worker == 8
    assert mem.kv_blocks_per_worker == mem.kv_tokens_per_worker // 64 > 0


def test_quantization_and_parallelism_change_capacity_for_the_right_reasons():
    base = worker_memory(HardwareSpec(model=L8, system="h200_sxm"), 64)
    fp8kv = worker_memory(HardwareSpec(model=L8, system="h200_sxm", kv_quant="fp8"), 64)
    fp8w = worker_memory(HardwareSpec(model=L8, system="h200_sxm", weight_quant="fp8"), 64)
    assert fp8kv.kv_bytes_per_token == base.kv_bytes_per_token / 2
    assert fp8kv.kv_tokens_per_worker == pytest.approx(2 * base.kv_tokens_per_worker, abs=2)
    assert fp8w.weights_gb_per_gpu < base.weights_gb_per_gpu and fp8w.kv_tokens_per_worker > base.kv_tokens_per_worker
    tp2 = worker_memory(HardwareSpec(model=L8, system="h200_sxm", tp=2), 64)
    assert tp2.gpus_per_worker == 2 and tp2.kv_tokens_per_worker > 2 * base.kv_tokens_per_worker


def test_a_model_that_does_not_fit_says_so_with_the_numbers():
    with pytest.raises(HardwareError, match=r"weights need 141\.1 GB per GPU.*85\.9 GB HBM"):
        worker_memory(HardwareSpec(model=L70, system="h100_sxm"), 64)


@pytest.mark.parametrize("fields, message", [
    ({"model": "meta-llama/Llama-3.1-70B", "system": "h100_sxm"}, "nearest: meta-llama/Meta-Llama-3.1-70B"),
    ({"model": L8, "system": "h900"}, "nearest: h200_sxm"),
    ({"model": L8, "system": "h100_sxm", "ep": 2}, "apply to MoE models"),
    ({"model": "Qwen/Qwen3-30B-A3B", "system": "b200_sxm", "ep": 2}, "must divide tp × dp"),
    ({"model": L8, "system": "h100_sxm", "weight_quant": "fp5"}, "choose from"),
    ({"model": L8, "system": "h100_sxm", "weight_quant": "nvfp4"}, "Blackwell"),
    ({"model": "./no/such/config.json", "system": "h100_sxm"}, "model config not found"),
])
def test_bad_names_and_combinations_are_clear_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        HardwareSpec(**fields)


def test_engine_versions_resolve_and_unknown_ones_list_the_valid():
    assert resolve_backend("h200_sxm", "vllm", None) == "0.24.0"
    assert resolve_backend("h200_sxm", "vllm", "current") == "0.24.0"
    assert resolve_backend("b60", "vllm", "previous") == "0.20.0"
    with pytest.raises(HardwareError, match="has no 'next' version; it has current=0.24.0"):
        resolve_backend("h200_sxm", "vllm", "next")
    with pytest.raises(HardwareError, match=r"no version '0\.1'; choose from 0\.24\.0 \(current\)"):
        resolve_backend("h200_sxm", "vllm", "0.1")
    with pytest.raises(HardwareError, match="no vllm data for system 'l4'.*--timing roofline"):
        resolve_backend("l4", "vllm", None)
    assert system_spec("h100_sxm").hbm_bytes == 85_899_345_920


def test_a_local_config_json_is_a_model(tmp_path):
    from dynosim.hardware.catalog import resolve_model

    src = resolve_model(L8)
    (tmp_path / "config.json").write_text(json.dumps(src.config))
    hw = HardwareSpec(model=str(tmp_path / "config.json"), system="h200_sxm")
    assert worker_memory(hw, 64).kv_tokens_per_worker == worker_memory(HardwareSpec(model=L8, system="h200_sxm"),
                                                                       64).kv_tokens_per_worker


def test_aic_table_agrees_with_direct_queries():
    from dynosim.hardware.aic import aic_timing

    t = aic_timing(HardwareSpec(model=L8, system="h200_sxm"))
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(60):
        n = int(rng.integers(1, 200))
        kv = int(n * rng.integers(16, 60_000))
        worst = max(worst, abs(t.pass_ms(0, 0, n, kv) / t.direct_ms(0, 0, n, kv) - 1))
    assert worst <= 0.005
    # passes that prefill are direct queries (memoised), mixed passes priced as one iteration
    assert t.pass_ms(1, 2048, 32, 32 * 8000) == t.direct_ms(1, 2048, 32, 32 * 8000)
    assert t.pass_ms(1, 2048, 32, 32 * 8000) > t.pass_ms(1, 2048, 0, 0)
    v = t.decode_ms_vec(np.array([32 * 1000.0, 32 * 1001.0]), np.array([1000.0, 1001.0]), 0)
    assert v.tolist() == [t.pass_ms(0, 0, 32, 32_000), t.pass_ms(0, 0, 32, 32 * 1001)]


def test_a_combination_the_database_lacks_is_an_error_not_a_fallback():
    from dynosim.hardware.aic import AicTiming

    with pytest.raises(HardwareError, match="cannot price.*--timing roofline"):
        AicTiming(HardwareSpec(model=DSV3, system="h200_sxm", tp=8, ep=8, backend="sglang"))


def test_engine_derives_capacity_gpus_and_timing_and_explicit_blocks_win():
    a = MockerArgs(hardware={"model": L70, "system": "h100_sxm", "tp": 4})
    assert (a.num_gpu_blocks, a.kv_blocks_source, a.gpus_per_worker, a.timing) == (7068, "memory", 4, "aic")
    # a pool that changes the hardware gets its own capacity; an explicit capacity wins everywhere
    cfg = RunConfig(engine=a, disagg=DisaggConfig(decode_engine={"hardware": {"tp": 8}}))
    pools = cfg.pool_engines()
    assert pools["prefill"].num_gpu_blocks == 7068 and pools["decode"].gpus_per_worker == 8
    assert pools["decode"].num_gpu_blocks == worker_memory(HardwareSpec(model=L70, system="h100_sxm", tp=8),
                                                           64).kv_blocks_per_worker
    assert cfg.num_gpus == 4 + 8
    b = MockerArgs(hardware={"model": L70, "system": "h100_sxm", "tp": 4}, num_gpu_blocks=100)
    assert (b.num_gpu_blocks, b.kv_blocks_source) == (100, "explicit")
    with pytest.raises(ValueError, match="needs a hardware section|give a hardware section"):
        MockerArgs(timing="aic")


def _trace(tmp_path, rows):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_summary_reports_each_pool_and_stepping_equals_fast_forward(tmp_path):
    import dynosim

    rows = [{"timestamp": 50 * i, "input_length": 2000 + 50 * i, "output_length": 60, "hash_ids": [i, 1000 + i, 2000 + i, 3000 + i, 4000 + i, 5000 + i, 6000 + i, 7000 + i]}
            for i in range(40)]
    trace = _trace(tmp_path, rows)
    hw = {"model": L8, "system": "h200_sxm"}
    res = [dynosim.run(trace, config=RunConfig(workers=2, router_mode="kv", engine=MockerArgs(hardware=hw),
                                               fast_forward=ff)) for ff in (True, False)]
    assert res[0].requests["e2e_ms"].tolist() == res[1].requests["e2e_ms"].tolist()
    h = res[0].summary["hardware"]
    assert (h["model"], h["system"], h["timing_source"], h["tp"], h["kv_blocks_source"]) == \
        (L8, "h200_sxm", "aic", 1, "memory")
    assert h["kv_blocks_per_worker"] == worker_memory(HardwareSpec(**hw), 64).kv_blocks_per_worker
    cfg = RunConfig(engine=MockerArgs(hardware=hw), router_mode="kv",
                    disagg=DisaggConfig(prefill_workers=1, decode_workers=1,
                                        decode_engine={"hardware": {"system": "h100_sxm"}}))
    pools = dynosim.run(trace, config=cfg).summary["hardware"]
    assert pools["prefill"]["system"] == "h200_sxm" and pools["decode"]["system"] == "h100_sxm"


def test_tp_sweep_points_differ_for_the_right_reasons_and_equal_run(tmp_path):
    from dynosim.sweeps.spec import SweepSpec, expand, skipped_layouts

    spec = SweepSpec(hardware={"model": L70, "system": "h100_sxm"}, tp=[1, 2, 4, 8], modes=["agg"],
                     router_modes=["kv"], arrival_speedups=[1.0])
    assert any("TP1" in s and "does not fit" in s for s in skipped_layouts(spec))
    pts = {p.labels["tp"]: p for p in expand(spec)}
    assert sorted(pts) == [2, 4, 8]
    for tp, p in pts.items():
        e = p.config.engine
        assert (e.gpus_per_worker, p.config.workers, e.speedup_ratio, e.timing) == (tp, 16 // tp, 1.0, "aic")
        assert e.num_gpu_blocks == worker_memory(HardwareSpec(model=L70, system="h100_sxm", tp=tp),
                                                 64).kv_blocks_per_worker
    # a sweep point and the equivalent `dynosim run` give identical results
    rows = [{"timestamp": 200 * i, "input_length": 2000, "output_length": 30, "hash_ids": [i, 500 + i, 900 + i, 1300 + i]}
            for i in range(24)]
    trace = _trace(tmp_path, rows)
    import dynosim

    point = dynosim.run(trace, config=pts[4].config).summary
    out = CliRunner().invoke(app, ["run", "--trace", str(trace), "--model", L70, "--system", "h100_sxm",
                                   "--tp", "4", "--workers", "4", "--router-mode", "kv", "--json"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.stdout[out.stdout.index("{"):])
    for k in ("ttft_ms", "itl_ms", "e2e_ms"):
        assert cli[k] == point[k]
    assert cli["throughput"] == point["throughput"]


def test_hardware_cli_list_show_and_errors():
    r = CliRunner()
    out = r.invoke(app, ["hardware", "show", "--model", L70, "--system", "h100_sxm", "--tp", "4"])
    assert out.exit_code == 0, out.output
    assert "7,068 blocks" in out.output and "35.28 GB" in out.output and "prefill" in out.output
    lst = r.invoke(app, ["hardware", "list"])
    assert lst.exit_code == 0 and "h100_sxm" in lst.output and "DeepSeek-V3" in lst.output
    bad = r.invoke(app, ["hardware", "show", "--model", "llama-70b", "--system", "h100_sxm"])
    assert bad.exit_code == 2 and "error:" in bad.output
    tp_alone = r.invoke(app, ["run", "--trace", "examples/traces/conversation_1k.jsonl", "--tp", "2"])
    assert tp_alone.exit_code == 2 and "--model and --system" in tp_alone.output


def test_attention_dp_spreads_requests_so_no_rank_has_tokens_without_a_request():
    from dynosim.hardware.aic import AicTiming, fpm

    ranks = fpm(1, 1024, 3, 3000, dp=2)
    assert [r["scheduled_requests"]["num_prefill_requests"] for r in ranks] == [1, 0]
    assert [r["scheduled_requests"]["sum_prefill_tokens"] for r in ranks] == [1024, 0]
    assert [r["scheduled_requests"]["num_decode_requests"] for r in ranks] == [2, 1]
    t = AicTiming(HardwareSpec(model="Qwen/Qwen3-30B-A3B", system="b200_sxm", tp=1, dp=2, ep=2))
    assert t.pass_ms(1, 1024, 0, 0) > 0 and t.pass_ms(3, 3000, 5, 5000) > t.pass_ms(0, 0, 5, 5000)


def test_a_deployment_file_with_hardware_prices_from_the_database():
    out = CliRunner().invoke(app, ["run", "--trace", "examples/traces/conversation_1k.jsonl", "--limit", "30",
                                   "--config", "examples/hardware_pd.yaml", "--json"])
    assert out.exit_code == 0, out.output
    h = json.loads(out.stdout[out.stdout.index("{"):])["hardware"]
    assert (h["prefill"]["system"], h["prefill"]["tp"], h["prefill"]["timing_source"]) == ("h200_sxm", 2, "aic")
    assert (h["decode"]["system"], h["decode"]["tp"], h["decode"]["timing_source"]) == ("h100_sxm", 4, "aic")
