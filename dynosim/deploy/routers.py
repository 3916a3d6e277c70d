"""The routers of a deployment, from its ``RunConfig``: the one place router settings are read.

``aggregated``: one router over ``cfg.workers``. Disaggregated (``cfg.disagg``): a prefill router
with the configured policy (its requests leave at once, so by default it does not track active
blocks) and Dynamo's decode router: round robin when the deployment routes round robin, else a
``kv`` router scored on decode blocks only (no prefill term, no overlap credit, no deduplication,
no KV events). The simulator and the live replay both call these, so both route alike.
"""

from __future__ import annotations

from typing import Callable

from dynosim.config import RunConfig
from dynosim.router.router import Router

WorkerMetrics = Callable[[int], tuple[float, int]]   # worker id -> (KV usage 0..1, requests waiting)


def router_params(cfg: RunConfig) -> dict:
    """The configured router's keyword arguments (``cfg.router`` with its policy options flattened in)."""
    params = cfg.router.model_dump()
    params.update(params.pop("policy_options"))
    return params


def aggregated_router(cfg: RunConfig, worker_metrics: WorkerMetrics | None = None) -> Router:
    """The router of an aggregated deployment: ``cfg.router_mode`` over ``cfg.workers`` workers."""
    return Router(cfg.router_mode, cfg.workers, cfg.engine.block_size, seed=cfg.seed,
                  max_num_batched_tokens=cfg.engine.max_num_batched_tokens, worker_metrics=worker_metrics,
                  **router_params(cfg))


def prefill_router(cfg: RunConfig, worker_metrics: WorkerMetrics | None = None, *,
                   num_workers: int | None = None) -> Router:
    """The prefill pool's router: the configured policy, weighing prefill load and overlap (as Dynamo does)."""
    d = cfg.disagg
    if d is None:
        raise ValueError("prefill_router needs a disaggregated RunConfig (cfg.disagg)")
    args = cfg.pool_engines()["prefill"]
    params = router_params(cfg)
    # the prefill router's requests leave at once: it does not track active blocks unless told to
    params.setdefault("track_active_blocks", False)
    n = d.prefill_workers if num_workers is None else num_workers
    return Router(cfg.router_mode, n, args.block_size, seed=cfg.seed,
                  max_num_batched_tokens=args.max_num_batched_tokens, worker_metrics=worker_metrics, **params)


def decode_router(cfg: RunConfig, worker_metrics: WorkerMetrics | None = None, *,
                  num_workers: int | None = None) -> Router:
    """Dynamo's decode router: round robin when the deployment routes round robin, else decode blocks only."""
    d = cfg.disagg
    if d is None:
        raise ValueError("decode_router needs a disaggregated RunConfig (cfg.disagg)")
    engines = cfg.pool_engines()
    bs = engines["prefill"].block_size
    n = d.decode_workers if num_workers is None else num_workers
    if cfg.router_mode == "round-robin":
        return Router("round-robin", n, bs, seed=cfg.seed + 1)
    return Router("kv", n, bs, seed=cfg.seed + 1, kv_events=False, overlap_score_credit=0.0,
                  prefill_load_scale=0.0, assume_kv_reuse=False,
                  max_num_batched_tokens=engines["decode"].max_num_batched_tokens, worker_metrics=worker_metrics)


def build_routers(cfg: RunConfig, worker_metrics: dict[str, WorkerMetrics] | None = None) -> dict[str, Router]:
    """Every router of ``cfg``'s deployment by pool: ``{"workers": ...}`` aggregated, else
    ``{"prefill": ..., "decode": ...}``. ``worker_metrics``: per pool name, what a policy reads of a worker."""
    m = worker_metrics or {}
    if cfg.disagg is None:
        return {"workers": aggregated_router(cfg, m.get("workers"))}
    return {"prefill": prefill_router(cfg, m.get("prefill")), "decode": decode_router(cfg, m.get("decode"))}
