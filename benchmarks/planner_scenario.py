"""The planner on real traffic: the conversation trace at ×4 arrival rate, planner vs a static peak deployment.

Why: an autoscaler is worth its complexity only if it holds the service
objectives with fewer GPU-hours than provisioning for the peak. What: replays
the Mooncake conversation trace (12,031 requests, ~59 min; ×4 → ~15 min)
twice with the KV router and Dynamo's mocker defaults: once starting small
with the planner in the loop (SLA target, throughput + load scaling), once
statically at the planner's peak size. Prints the replica timeline, GPU-hours,
goodput (requests meeting TTFT and ITL objectives), attainment, time-weighted
tokens/s/GPU and latency percentiles side by side, and the ratios.

    .venv/bin/python benchmarks/planner_scenario.py [--speedup 4] [--predictor arima] [--disagg]
"""

from __future__ import annotations

import argparse
import time

from _common import DEFAULT_TRACE

from dynosim.api import run
from dynosim.config import DisaggConfig, RunConfig
from dynosim.planner import PlannerConfig


def _row(label: str, s: dict, wall: float) -> str:
    g = s["goodput"]
    return (f"{label:<22} {s['gpu_seconds'] / 3600:>9.3f} {s['mean_gpus']:>9.2f} {g['requests_per_s']:>9.3f} "
            f"{100 * g['attainment']:>8.1f}% {s['throughput']['output_tokens_per_s_per_gpu']:>9.1f} "
            f"{s['ttft_ms']['p50']:>8.0f} {s['ttft_ms']['p90']:>8.0f} {s['itl_ms']['mean']:>7.1f} {wall:>7.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--speedup", type=float, default=4.0)
    ap.add_argument("--predictor", default="arima")
    ap.add_argument("--start", type=int, default=2, help="starting workers (per pool when --disagg)")
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--startup-s", type=float, default=60.0)
    ap.add_argument("--ttft-ms", type=float, default=2000.0)
    ap.add_argument("--itl-ms", type=float, default=50.0)
    ap.add_argument("--disagg", action="store_true", help="prefill + decode pools instead of one pool")
    ap.add_argument("--router-mode", default="kv")
    args = ap.parse_args()

    slo = {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms}
    planner = PlannerConfig(predictor=args.predictor, max_gpu_budget=args.budget, startup_time_s=args.startup_s)
    base = dict(router_mode=args.router_mode, arrival_speedup=args.speedup, slo=slo)
    if args.disagg:
        dyn = RunConfig(disagg=DisaggConfig(prefill_workers=args.start, decode_workers=args.start), planner=planner,
                        **base)
    else:
        dyn = RunConfig(workers=args.start, planner=planner, **base)
    print(f"trace {args.trace} ×{args.speedup:g}; router {args.router_mode}; SLO TTFT ≤ {args.ttft_ms:g} ms, "
          f"ITL ≤ {args.itl_ms:g} ms; planner {args.predictor}, budget {args.budget} GPUs, startup "
          f"{args.startup_s:g} s, start {args.start}{' per pool' if args.disagg else ''}")
    t0 = time.perf_counter()
    res = run(args.trace, config=dyn)
    wall_dyn = time.perf_counter() - t0
    s_dyn = res.summary
    tl = res.replicas
    print("\nreplica timeline (changes):")
    print(tl.to_string(index=False))
    peak = {name: p["peak_ready"] for name, p in s_dyn["planner"]["pools"].items()}
    if args.disagg:
        static = RunConfig(disagg=DisaggConfig(prefill_workers=peak["prefill"], decode_workers=peak["decode"]),
                           **base)
        label = f"static {peak['prefill']}P+{peak['decode']}D"
    else:
        static = RunConfig(workers=peak["workers"], **base)
        label = f"static {peak['workers']} workers"
    t0 = time.perf_counter()
    s_st = run(args.trace, config=static).summary
    wall_st = time.perf_counter() - t0

    print(f"\n{'deployment':<22} {'GPU-h':>9} {'mean GPUs':>9} {'goodput':>9} {'attained':>9} {'tok/s/GPU':>9} "
          f"{'TTFTp50':>8} {'TTFTp90':>8} {'ITL':>7} {'wall s':>7}")
    print(_row("planner", s_dyn, wall_dyn))
    print(_row(label, s_st, wall_st))
    gh = s_dyn["gpu_seconds"] / s_st["gpu_seconds"]
    gp = s_dyn["goodput"]["requests_per_s"] / s_st["goodput"]["requests_per_s"]
    print(f"\nplanner / static: GPU-hours {gh:.3f}×, goodput {gp:.3f}×, tokens/s/GPU "
          f"{s_dyn['throughput']['output_tokens_per_s_per_gpu'] / s_st['throughput']['output_tokens_per_s_per_gpu']:.3f}×"
          f", goodput per GPU-hour {gp / gh:.3f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
