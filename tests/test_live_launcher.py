"""Command construction for live engines (vLLM CPU/CUDA, NIXL roles, SGLang)."""

from __future__ import annotations

import json

import pytest

from dynosim.engines.live.launcher import LaunchSpec, cpu_core_plan, plan_ports, sglang_command, vllm_command


def arg(argv, flag):
    return argv[argv.index(flag) + 1]


def test_vllm_cpu_defaults_follow_the_cpu_path():
    argv, env = vllm_command(LaunchSpec("/m/tiny", 18000, served_model_name="tiny", cpu_cores=(1,),
                                        kv_events_endpoint="tcp://127.0.0.1:18557", workdir="/w"), python="py")
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert arg(argv, "--dtype") == "float32" and "--enforce-eager" in argv and arg(argv, "--block-size") == "32"
    assert "--enable-prefix-caching" in argv and arg(argv, "--served-model-name") == "tiny"
    assert json.loads(arg(argv, "--kv-events-config")) == {"enable_kv_cache_events": True, "publisher": "zmq",
                                                           "endpoint": "tcp://127.0.0.1:18557"}
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["TMPDIR"] == env["VLLM_RPC_BASE_PATH"] == "/w" and env["HF_HUB_OFFLINE"] == "1"


def test_vllm_cuda_and_nixl_roles():
    argv, env = vllm_command(LaunchSpec("meta/llama", 8000, device="cuda", block_size=16, gpu_ids=(2, 3),
                                        tensor_parallel_size=2, role="prefill", nixl_side_channel_port=5600))
    assert arg(argv, "--dtype") == "auto" and "--enforce-eager" not in argv
    assert arg(argv, "--tensor-parallel-size") == "2" and env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert json.loads(arg(argv, "--kv-transfer-config")) == {"kv_connector": "NixlConnector", "kv_role": "kv_producer"}
    assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5600"
    argv, _ = vllm_command(LaunchSpec("/m", 18001, role="decode", nixl_side_channel_port=18601))
    assert json.loads(arg(argv, "--kv-transfer-config"))["kv_role"] == "kv_consumer"
    assert json.loads(arg(argv, "--kv-transfer-config"))["kv_buffer_device"] == "cpu"


def test_invalid_specs_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of 32"):
        LaunchSpec("/m", 18000, block_size=16)
    with pytest.raises(ValueError, match="nixl_side_channel_port"):
        LaunchSpec("/m", 18000, role="prefill")
    with pytest.raises(ValueError, match="port"):
        LaunchSpec("/m", 70000)
    with pytest.raises(ValueError, match="no CPU build"):
        sglang_command(LaunchSpec("/m", 18000))


def test_sglang_command():
    argv, env = sglang_command(LaunchSpec("Qwen/Qwen3-8B", 30000, device="cuda", block_size=1, gpu_ids=(0,),
                                          enable_prefix_caching=False, role="decode", nixl_side_channel_port=8998),
                               python="py")
    assert argv[:3] == ["py", "-m", "sglang.launch_server"] and arg(argv, "--model-path") == "Qwen/Qwen3-8B"
    assert arg(argv, "--page-size") == "1" and "--disable-radix-cache" in argv
    assert arg(argv, "--disaggregation-mode") == "decode" and arg(argv, "--disaggregation-transfer-backend") == "nixl"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"


def test_port_and_core_plans():
    ports = plan_ports(3)
    assert [p["port"] for p in ports] == [18000, 18001, 18002] and len({p["events"] for p in ports}) == 3
    assert cpu_core_plan(2, 2) == [(0,), (1,)] and cpu_core_plan(2, 5) == [(0, 1), (2, 3)]
    with pytest.raises(ValueError, match="at least as many cores"):
        cpu_core_plan(3, 2)


def test_scheduler_limits_and_cache_report_are_passed_to_both_engines():
    spec = LaunchSpec("/m", 18000, device="cuda", max_num_seqs=64, max_num_batched_tokens=2048,
                      num_gpu_blocks_override=512)
    argv, _ = vllm_command(spec, python="py")
    assert arg(argv, "--max-num-seqs") == "64" and arg(argv, "--max-num-batched-tokens") == "2048"
    assert arg(argv, "--num-gpu-blocks-override") == "512" and "--enable-prompt-tokens-details" in argv
    argv, _ = sglang_command(spec, python="py")
    assert arg(argv, "--max-running-requests") == "64" and arg(argv, "--chunked-prefill-size") == "2048"
    assert "--enable-cache-report" in argv
    argv, _ = vllm_command(LaunchSpec("/m", 18000, prompt_tokens_details=False), python="py")
    assert "--enable-prompt-tokens-details" not in argv and "--max-num-seqs" not in argv
