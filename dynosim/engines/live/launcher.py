"""Command lines for live engine servers: vLLM (CPU or CUDA, optional NIXL P/D) and SGLang.

Pure functions from a launch spec to ``(argv, env)``; starting and watching
the processes is the caller's job. The CPU path follows what works with the
CPU build of vLLM here: float32, eager mode, block size a multiple of 32,
one OMP core per instance (two instances on one core crawl), temp/cache
directories kept out of /tmp and ~/.cache, hub access off.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["aggregated", "prefill", "decode"]


@dataclass(frozen=True)
class LaunchSpec:
    """One engine server instance."""

    model: str
    port: int
    host: str = "127.0.0.1"
    served_model_name: str | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    role: Role = "aggregated"
    block_size: int = 32
    dtype: str | None = None             # default: float32 on CPU (bf16 + eager can SIGILL), auto on CUDA
    max_model_len: int = 2048
    enable_prefix_caching: bool = True
    enforce_eager: bool | None = None    # default: True on CPU
    num_gpu_blocks_override: int | None = None
    max_num_seqs: int | None = None          # scheduler limits: pass the simulated engine's, so both match
    max_num_batched_tokens: int | None = None
    prompt_tokens_details: bool = True       # vLLM: report cached prompt tokens per request in usage
    kv_events_endpoint: str | None = None  # e.g. tcp://127.0.0.1:18557 (the listener binds, vLLM connects)
    cpu_cores: tuple[int, ...] = ()      # OMP cores of this instance (CPU)
    cpu_kvcache_gib: int = 1
    gpu_ids: tuple[int, ...] = ()        # CUDA_VISIBLE_DEVICES (CUDA)
    tensor_parallel_size: int = 1
    nixl_side_channel_port: int | None = None
    workdir: str | None = None           # TMPDIR / RPC sockets / compile cache
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.device == "cpu" and self.block_size % 32:
            raise ValueError(f"block_size {self.block_size}: the CPU build of vLLM needs a multiple of 32")
        if self.role != "aggregated" and self.nixl_side_channel_port is None:
            raise ValueError(f"role {self.role!r} needs nixl_side_channel_port (NIXL prefill/decode hand-off)")
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")


def vllm_command(spec: LaunchSpec, python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for ``vllm``'s OpenAI server (module entry point: no CLI shim needed)."""
    cpu = spec.device == "cpu"
    argv = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", spec.model, "--served-model-name", spec.served_model_name or spec.model,
            "--host", spec.host, "--port", str(spec.port),
            "--block-size", str(spec.block_size), "--max-model-len", str(spec.max_model_len),
            "--dtype", spec.dtype or ("float32" if cpu else "auto")]
    argv.append("--enable-prefix-caching" if spec.enable_prefix_caching else "--no-enable-prefix-caching")
    if spec.enforce_eager if spec.enforce_eager is not None else cpu:
        argv.append("--enforce-eager")
    if spec.num_gpu_blocks_override is not None:
        argv += ["--num-gpu-blocks-override", str(spec.num_gpu_blocks_override)]
    if spec.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
    if spec.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(spec.max_num_seqs)]
    if spec.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(spec.max_num_batched_tokens)]
    if spec.prompt_tokens_details:
        argv.append("--enable-prompt-tokens-details")
    if spec.kv_events_endpoint:
        argv += ["--kv-events-config", json.dumps({"enable_kv_cache_events": True, "publisher": "zmq",
                                                   "endpoint": spec.kv_events_endpoint})]
    if spec.role != "aggregated":
        cfg = {"kv_connector": "NixlConnector", "kv_role": "kv_producer" if spec.role == "prefill" else "kv_consumer"}
        if cpu:
            cfg["kv_buffer_device"] = "cpu"
        argv += ["--kv-transfer-config", json.dumps(cfg)]
    argv += list(spec.extra_args)

    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if spec.workdir:
        env.update(TMPDIR=spec.workdir, VLLM_RPC_BASE_PATH=spec.workdir, VLLM_CACHE_ROOT=f"{spec.workdir}/vllm-cache")
    if cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(spec.cpu_kvcache_gib)
        if spec.cpu_cores:
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, spec.cpu_cores))
    elif spec.gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpu_ids))
    if spec.nixl_side_channel_port is not None:
        env.update(VLLM_NIXL_SIDE_CHANNEL_HOST=spec.host, VLLM_NIXL_SIDE_CHANNEL_PORT=str(spec.nixl_side_channel_port))
    return argv, env


def sglang_command(spec: LaunchSpec, python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment for SGLang's server (CUDA only: no CPU build is installable here)."""
    if spec.device != "cuda":
        raise ValueError("SGLang has no CPU build available from the registries; use device='cuda'")
    argv = [python or sys.executable, "-m", "sglang.launch_server", "--model-path", spec.model,
            "--served-model-name", spec.served_model_name or spec.model, "--host", spec.host,
            "--port", str(spec.port), "--page-size", str(spec.block_size),
            "--context-length", str(spec.max_model_len), "--tp-size", str(spec.tensor_parallel_size)]
    if spec.dtype:
        argv += ["--dtype", spec.dtype]
    if not spec.enable_prefix_caching:
        argv.append("--disable-radix-cache")
    if spec.max_num_seqs is not None:
        argv += ["--max-running-requests", str(spec.max_num_seqs)]
    if spec.max_num_batched_tokens is not None:
        argv += ["--chunked-prefill-size", str(spec.max_num_batched_tokens)]
    if spec.prompt_tokens_details:
        argv.append("--enable-cache-report")  # usage.prompt_tokens_details.cached_tokens
    if spec.kv_events_endpoint:
        argv += ["--kv-events-config", json.dumps({"publisher": "zmq", "endpoint": spec.kv_events_endpoint})]
    if spec.role != "aggregated":
        argv += ["--disaggregation-mode", spec.role, "--disaggregation-transfer-backend", "nixl",
                 "--disaggregation-bootstrap-port", str(spec.nixl_side_channel_port)]
    argv += list(spec.extra_args)
    env = {"HF_HUB_OFFLINE": "1"}
    if spec.gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpu_ids))
    return argv, env


def plan_ports(n: int, base_port: int = 18000, events_base: int = 18500, side_base: int = 18600) -> list[dict]:
    """Non-overlapping HTTP / KV-event / NIXL side-channel ports for n instances."""
    if n < 1:
        raise ValueError("need at least one instance")
    return [{"port": base_port + i, "events": f"tcp://127.0.0.1:{events_base + i}", "side": side_base + i}
            for i in range(n)]


def cpu_core_plan(n_instances: int, n_cores: int) -> list[tuple[int, ...]]:
    """Disjoint OMP core sets, one per instance (instances sharing a core slow each other ~20×)."""
    if n_instances < 1 or n_cores < 1:
        raise ValueError("need at least one instance and one core")
    if n_instances > n_cores:
        raise ValueError(f"{n_instances} CPU instances need at least as many cores, this machine has {n_cores}")
    per = n_cores // n_instances
    return [tuple(range(i * per, (i + 1) * per)) for i in range(n_instances)]
