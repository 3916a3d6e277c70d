"""Agreement with Dynamo's replay: per-metric relative differences on the same trace and settings.

Runs dynosim and ``dynamo.replay`` (ai-dynamo, in its own venv) on the same
trace, workers, engine args and router mode, and prints for each metric the
two values, the relative difference and PASS/MISS against the target (2%;
prefix reuse within 0.01 absolute). The KV router breaks exact ties at random
(Dynamo with an unseeded generator), so ``--runs N`` averages N runs on each
side (dynosim seeds 0..N-1). ``--per-request`` also compares every request's
TTFT, E2E and reused tokens (meaningful for round-robin, which has no ties).

Exit status 1 if any target is missed, 0 otherwise (also when Dynamo is not
installed: then it prints SKIPPED).

    .venv/bin/python benchmarks/agree_dynamo.py [--router-mode round-robin|kv] [--runs 3] [--per-request]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _common import DEFAULT_TRACE, find_dynamo_python, run_dynamo, run_dynosim

# (label, dynosim getter, Dynamo report key, kind) ; kind "rel" = relative 2%, "abs" = absolute 0.01
METRICS = [
    ("mean TTFT (ms)", lambda s: s["ttft_ms"]["mean"], "mean_ttft_ms", "rel"),
    ("p50 TTFT (ms)", lambda s: s["ttft_ms"]["p50"], "median_ttft_ms", "rel"),
    ("p99 TTFT (ms)", lambda s: s["ttft_ms"]["p99"], "p99_ttft_ms", "rel"),
    ("mean ITL, token gaps (ms)", lambda s: s["token_gap_ms"]["mean"], "mean_itl_ms", "rel"),
    ("p99 ITL, token gaps (ms)", lambda s: s["token_gap_ms"]["p99"], "p99_itl_ms", "rel"),
    ("mean TPOT / per-request ITL (ms)", lambda s: s["itl_ms"]["mean"], "mean_tpot_ms", "rel"),
    ("mean E2E (ms)", lambda s: s["e2e_ms"]["mean"], "mean_e2e_latency_ms", "rel"),
    ("p99 E2E (ms)", lambda s: s["e2e_ms"]["p99"], "p99_e2e_latency_ms", "rel"),
    ("output throughput (tok/s)", lambda s: s["throughput"]["output_tokens_per_s"], "output_throughput_tok_s", "rel"),
    ("request throughput (req/s)", lambda s: s["throughput"]["requests_per_s"], "request_throughput_rps", "rel"),
    ("duration (s)", lambda s: s["duration_s"], "duration_ms", "rel_ms"),
    ("prefix reuse ratio", lambda s: s["prefix_reuse_ratio"], "prefix_cache_reused_ratio", "abs"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--router-mode", default="round-robin", choices=["round-robin", "kv"])
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--num-gpu-blocks", type=int, default=16384)
    ap.add_argument("--arrival-speedup", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=1, help="runs per side, averaged (use 3+ for kv)")
    ap.add_argument("--per-request", action="store_true", help="compare every request (round-robin)")
    ap.add_argument("--dynamo-python", default=None)
    args = ap.parse_args()

    py = find_dynamo_python(args.dynamo_python)
    if py is None:
        print("SKIPPED: Dynamo is not installed (set --dynamo-python or $DYNOSIM_DYNAMO_PYTHON)")
        return 0
    kw = dict(block_size=args.block_size, num_gpu_blocks=args.num_gpu_blocks, arrival_speedup=args.arrival_speedup)
    tmp = Path(tempfile.mkdtemp(prefix="agree_"))
    ours, theirs = [], []
    for i in range(args.runs):
        per = args.per_request and i == 0
        ours.append(run_dynosim(args.trace, args.workers, args.router_mode, seed=i,
                                requests_out=str(tmp / "ours.parquet") if per else None, **kw)["summary"])
        theirs.append(run_dynamo(py, args.trace, args.workers, args.router_mode,
                                 requests_out=str(tmp / "dyn.jsonl") if per else None, **kw)["report"])
    print(f"trace {args.trace}; {args.workers} workers, router {args.router_mode}, block {args.block_size}, "
          f"{args.num_gpu_blocks} blocks, arrival ×{args.arrival_speedup}; {args.runs} run(s) per side")
    print(f"{'metric':34s} {'dynosim':>14s} {'Dynamo':>14s} {'diff':>10s}  target")
    missed = 0
    for label, get, key, kind in METRICS:
        a = statistics.fmean(get(s) for s in ours)
        b = statistics.fmean(r[key] for r in theirs)
        if kind == "rel_ms":
            b /= 1000.0
        if kind == "abs":
            diff, ok, shown, target = a - b, abs(a - b) <= 0.01, f"{a - b:+.4f}", "|d| <= 0.01"
        else:
            rel = (a - b) / b if b else float("inf")
            diff, ok, shown, target = rel, abs(rel) <= 0.02, f"{100 * rel:+.2f}%", "|d| <= 2%"
        missed += not ok
        print(f"{label:34s} {a:14.4f} {b:14.4f} {shown:>10s}  {target} {'PASS' if ok else 'MISS'}")
    if args.runs > 1:
        for label, get, key in (("mean TTFT", lambda s: s["ttft_ms"]["mean"], "mean_ttft_ms"),
                                ("prefix reuse", lambda s: s["prefix_reuse_ratio"], "prefix_cache_reused_ratio")):
            print(f"run-to-run spread of {label}: dynosim sd {statistics.stdev(get(s) for s in ours):.4f}, "
                  f"Dynamo sd {statistics.stdev(r[key] for r in theirs):.4f}")
    if args.per_request:
        import pandas as pd

        mine = pd.read_parquet(tmp / "ours.parquet")
        mine["trace_index"] = mine["line"] - 1
        dyn = pd.read_json(tmp / "dyn.jsonl", lines=True)
        m = mine.merge(dyn, on="trace_index", suffixes=("", "_d"))
        d_ttft = (m["ttft_ms"] - m["ttft_ms_d"]).abs()
        d_e2e = (m["e2e_ms"] - m["e2e_latency_ms"]).abs()
        same_reuse = (m["reused_tokens"] == m["reused_input_tokens"])
        close = (d_ttft <= 1e-3) & (d_e2e <= 1e-3) & same_reuse
        print(f"per request: {int(close.sum()):,} of {len(m):,} match (TTFT and E2E within 1e-3 ms, same reused "
              f"tokens); max |ΔTTFT| {d_ttft.max():.6f} ms, max |ΔE2E| {d_e2e.max():.6f} ms, "
              f"reuse mismatches {int((~same_reuse).sum())}")
    print("ALL PASS" if not missed else f"{missed} metric(s) MISS")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
