"""Disaggregated serving in the simulator: prefill pool → KV transfer → decode pool.

As Dynamo's offline disaggregated replay does it: each request first goes,
as a hidden one-token twin, through the prefill router to a prefill worker;
when the twin completes, the prefill router frees it (its KV blocks return
to the prefill worker's cache) and the KV hand-off starts. When the KV has
arrived (``TransferConfig``: ISL × bytes per token / bandwidth + latency,
optionally queued on a shared link) the original request, with its full
output length, is routed by the decode router (cost = decode blocks only) to
a decode worker, which allocates the prompt's KV without prefill time and
decodes. So TTFT = prefill queue + prefill + transfer + decode queue + first
decode pass. Prefix reuse is what the prefill side found cached.

The frontend doing this (``DisaggFrontend``) and the routers live in ``dynosim.deploy``, shared with
``validate``; this module wires them to mocker workers in virtual time.
"""

from __future__ import annotations

from dynosim.config import RunConfig
from dynosim.deploy.routers import decode_router as make_decode_router, prefill_router as make_prefill_router
from dynosim.disagg.transfer import LinkState
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.engines.mocker.timing import timing_for
from dynosim.router.hashing import BlockHasher
from dynosim.sim.clock import Clock
from dynosim.deploy.frontend import DisaggFrontend
from dynosim.sim.worker import TokenGaps, Worker
from dynosim.traces.mooncake import Trace


def build_disagg_cluster(trace: Trace, cfg: RunConfig, clock: Clock):
    """Wire frontend → prefill router → prefill workers → link → decode router → decode workers."""
    from dynosim.sim.simulation import Cluster, PoolHandle

    d = cfg.disagg
    assert d is not None
    engines = cfg.pool_engines()
    pre_args, dec_args = engines["prefill"], engines["decode"]
    pre_timing = timing_for(pre_args)
    dec_timing = timing_for(dec_args)
    prefill: list[Worker] = []
    decode: list[Worker] = []
    fr: list[DisaggFrontend] = []

    def metrics_of(pool: list[Worker], args):
        def worker_metrics(wid: int) -> tuple[float, int]:
            sched = pool[wid].sched
            return sched.kv.num_active / args.num_gpu_blocks, len(sched.waiting)
        return worker_metrics

    bs = pre_args.block_size
    prefill_router = make_prefill_router(cfg, metrics_of(prefill, pre_args))
    decode_router = make_decode_router(cfg, metrics_of(decode, dec_args))
    gaps = TokenGaps()

    def kv_events(wid: int, events: list) -> None:
        for kind, hashes, parent in events:
            prefill_router.on_kv_event(wid, kind, hashes, parent)

    def new_prefill(wid: int) -> Worker:
        w = Worker(wid, clock, None, gaps, lambda r: fr[0].on_prefill_first_token(r),
                   lambda r: fr[0].on_prefill_complete(r), on_failed=lambda r: fr[0].on_prefill_failed(r),
                   fast_forward=cfg.fast_forward, on_kv_events=kv_events if prefill_router.wants_kv_events else None,
                   admit_interval_ms=pre_args.admit_interval_ms)
        w.sched = VllmScheduler(pre_args, pre_timing,
                                sink=w.record_kv_event if prefill_router.wants_kv_events else None, role="prefill")
        return w

    def new_decode(wid: int) -> Worker:
        w = Worker(wid, clock, None, gaps, lambda r: fr[0].on_first_token(r), lambda r: fr[0].on_complete(r),
                   on_failed=lambda r: fr[0].on_failed(r), fast_forward=cfg.fast_forward,
                   client_latency_ms=dec_args.client_latency_ms)
        w.sched = VllmScheduler(dec_args, dec_timing, role="decode", spec_seed=dec_args.mtp_seed + wid)
        return w

    prefill.extend(new_prefill(wid) for wid in range(d.prefill_workers))
    decode.extend(new_decode(wid) for wid in range(d.decode_workers))
    hasher = BlockHasher(bs, cfg.trace_block_size)
    link = LinkState(d.transfer.resolve(pre_args.hardware, dec_args.hardware, cfg.num_gpus))
    frontend = DisaggFrontend(clock, trace, hasher, prefill_router, prefill, decode_router, decode,
                              min(pre_args.num_gpu_blocks, dec_args.num_gpu_blocks), link, cfg.concurrency)
    fr.append(frontend)
    pools = [PoolHandle("prefill", "prefill", prefill_router, prefill, new_prefill, pre_args, pre_timing),
             PoolHandle("decode", "decode", decode_router, decode, new_decode, dec_args, dec_timing)]
    return Cluster(frontend, prefill_router, prefill + decode, gaps, pools)
