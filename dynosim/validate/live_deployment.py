"""The live side of a ``RunConfig``: the servers its pools are (``launch_specs``), the endpoints an attached
run must give per pool (``check_attach_counts``), and a disaggregated deployment given by pool sizes alone
(``live_disagg``: the hand-off predicted from the model directory's KV shape)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dynosim.config import DisaggConfig, RunConfig
from dynosim.deploy.assembly import ROLE_OF_POOL
from dynosim.disagg.transfer import DTYPE_BYTES, ModelKVShape, TransferConfig
from dynosim.engines.live.launcher import LaunchSpec, cpu_core_plan, plan_ports

if TYPE_CHECKING:
    from dynosim.validate.workflow import ValidateOptions


def pool_roles(cfg: RunConfig) -> list[tuple[str, int]]:
    """Every server of ``cfg``'s deployment in launch order: (pool, index in the pool), the router's pool first
    (``workers``, or ``prefill`` then ``decode``)."""
    return [(pool, i) for pool, n in cfg.pool_sizes().items() for i in range(n)]


def launch_specs(cfg: RunConfig, opts: ValidateOptions, kv_events: bool, workdir: str) -> list[LaunchSpec]:
    """One server per worker of each of ``cfg``'s pools, with its pool's engine settings; ``workdir`` must be
    short (vLLM puts IPC sockets there, 107-byte limit). KV events are published by the router's pool."""
    roles = pool_roles(cfg)
    engines = cfg.pool_engines()
    n = len(roles)
    ports = plan_ports(n, opts.base_port, opts.events_base_port)
    cores: list[tuple[int, ...]] = [()] * n
    if opts.device == "cpu":
        cores = cpu_core_plan(n, opts.cpu_cores or os.cpu_count() or 1)
    specs = []
    for w, (pool, _) in enumerate(roles):
        role = ROLE_OF_POOL[pool]
        eng = engines[pool]
        gpu_ids = tuple(range(w * opts.gpus_per_worker, (w + 1) * opts.gpus_per_worker)) \
            if opts.device == "cuda" else ()
        specs.append(LaunchSpec(
            opts.model, ports[w]["port"], served_model_name=opts.served_model_name or opts.model,
            device=opts.device, block_size=eng.block_size, max_model_len=opts.max_model_len,
            enable_prefix_caching=eng.enable_prefix_caching,
            num_gpu_blocks_override=eng.num_gpu_blocks if opts.match_kv_capacity else None,
            max_num_seqs=eng.max_num_seqs, max_num_batched_tokens=eng.max_num_batched_tokens,
            kv_events_endpoint=ports[w]["events"] if kv_events and role != "decode" else None,
            cpu_cores=cores[w], gpu_ids=gpu_ids, role=role,
            nixl_side_channel_port=ports[w]["side"] if role != "aggregated" else None,
            tensor_parallel_size=opts.gpus_per_worker if opts.device == "cuda" else 1,
            workdir=workdir, extra_args=tuple(opts.extra_engine_args)))
    return specs


def model_kv_shape(model: str, device: str) -> ModelKVShape | None:
    """The KV shape of a local model directory (its ``config.json``), in the dtype the engine runs it in:
    float32 on the CPU build (launched with ``--dtype float32``), else the model's own (bf16 if unsaid)."""
    path = Path(model) / "config.json" if model else None
    if path is None or not path.is_file():
        return None
    try:
        c = json.loads(path.read_text())
        heads = int(c["num_attention_heads"])
        head_dim = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
        dtype = "float32" if device == "cpu" else str(c.get("torch_dtype") or c.get("dtype") or "bfloat16")
        return ModelKVShape(layers=int(c["num_hidden_layers"]), kv_heads=int(c.get("num_key_value_heads") or heads),
                            head_dim=head_dim, dtype=dtype if dtype in DTYPE_BYTES else "bf16")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the model's KV shape ({exc!r}); give disagg.transfer.model "
                         "in --config") from None


def live_disagg(prefill_workers: int, decode_workers: int, model: str, device: str) -> DisaggConfig:
    """A disaggregated live deployment given by its pool sizes alone (no ``disagg`` section): its hand-off is
    predicted as the model's KV shape (from its directory, when it is one) over the ``tcp`` preset."""
    return DisaggConfig(prefill_workers=prefill_workers, decode_workers=decode_workers,
                        transfer=TransferConfig(model=model_kv_shape(model, device), link="tcp"))


def _count(n: int, flag: str) -> str:
    return f"{n} {flag} was given" if n == 1 else f"{n} {flag} were given"


def check_attach_counts(cfg: RunConfig, opts: ValidateOptions) -> None:
    """Attach mode: one endpoint per worker of each of ``cfg``'s pools (``--endpoint``: the aggregated or the
    prefill pool, ``--decode-endpoint``: the decode pool), else a ``ValueError`` naming the flag."""
    n, nd = len(opts.endpoints), len(opts.decode_endpoints)
    d = cfg.disagg
    if d is None:
        if nd:
            raise ValueError(f"--decode-endpoint: the deployment has no decode pool (no disagg section) but "
                             f"{_count(nd, '--decode-endpoint')}")
        if n != cfg.workers:
            raise ValueError(f"--endpoint: the deployment has {cfg.workers} worker(s) but {_count(n, '--endpoint')} "
                             "(one per worker)")
        return
    if n != d.prefill_workers:
        raise ValueError(f"--endpoint: the deployment has {d.prefill_workers} prefill worker(s) but "
                         f"{_count(n, '--endpoint')} (one per prefill worker)")
    if nd != d.decode_workers:
        raise ValueError(f"--decode-endpoint: the deployment has {d.decode_workers} decode worker(s) but "
                         f"{_count(nd, '--decode-endpoint')} (one per decode worker)")
