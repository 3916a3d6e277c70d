"""Agreement with Dynamo's replay: per-metric relative differences on the same trace and settings.

Why: dynosim is a twin of Dynamo's offline replay, so its figures should
match Dynamo's on the same input. What: runs dynosim and ``dynamo.replay``
(ai-dynamo, in its own venv, via benchmarks/dynamo_ref.py) on the same trace,
workers, engine args and router mode, and prints for each metric the two
values, the relative difference and PASS/MISS against the target (2%; prefix
reuse within 0.01 absolute). The KV router breaks exact ties at random
(Dynamo with an unseeded generator), so ``--runs N`` averages N runs on each
side (dynosim seeds 0..N-1). ``--per-request`` also compares every request's
TTFT, E2E and reused tokens (meaningful for round-robin, which has no ties):
how many agree (TTFT and E2E within 1e-3 ms, reused tokens exactly) and the
largest differences; it is informational and does not change the exit status.

Speculative decoding (``--nextn N [--nextn-accept-rates 0.85,0.3] [--mtp-seed S]``):
both sides draft N tokens per decode pass with the same conditional acceptance
chain and seed: dynosim's MockerArgs nextn, nextn_accept_rates, mtp_seed;
Dynamo's engine aic_nextn, aic_nextn_accept_rates (a comma-separated string)
and aic_mtp_seed. Both time passes with the polynomial model, which ignores N.

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

from _common import DEFAULT_TRACE, DYNAMO_MODES, find_dynamo_python, run_dynamo, run_dynosim

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
    ap.add_argument("--trace", default=str(DEFAULT_TRACE), help="Mooncake JSONL trace (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=16, help="aggregated workers (default: %(default)s)")
    ap.add_argument("--router-mode", default="round-robin", choices=list(DYNAMO_MODES),
                    help="router mode on both sides (default: %(default)s)")
    ap.add_argument("--block-size", type=int, default=64, help="engine KV block size (default: %(default)s)")
    ap.add_argument("--num-gpu-blocks", type=int, default=16384, help="KV blocks per worker (default: %(default)s)")
    ap.add_argument("--arrival-speedup", type=float, default=1.0,
                    help="trace timestamps are divided by this (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=1, help="runs per side, averaged (use 3+ for kv)")
    ap.add_argument("--prefill-workers", type=int, default=0, help="disaggregated: prefill workers (e.g. 4)")
    ap.add_argument("--decode-workers", type=int, default=0, help="disaggregated: decode workers (e.g. 12)")
    ap.add_argument("--kv-bandwidth", type=float, default=64.0, help="disaggregated: KV transfer GB/s")
    ap.add_argument("--nextn", type=int, default=0, help="speculative decoding: draft tokens per decode pass (0: off)")
    ap.add_argument("--nextn-accept-rates", default=None,
                    help="with --nextn: per-position conditional acceptance, comma-separated (default: Dynamo's "
                         "0.85,0.3,0,...)")
    ap.add_argument("--mtp-seed", type=int, default=None,
                    help="with --nextn: seed of the acceptance draws, worker w uses seed + w (default: 42 on both)")
    ap.add_argument("--per-request", action="store_true", help="also compare every request (round-robin)")
    ap.add_argument("--dynamo-python", default=None, help="python of a venv with ai-dynamo (or $DYNOSIM_DYNAMO_PYTHON)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if args.nextn < 0:
        ap.error("--nextn must be >= 0")
    if (args.nextn_accept_rates is not None or args.mtp_seed is not None) and not args.nextn:
        ap.error("--nextn-accept-rates and --mtp-seed need --nextn >= 1")
    if args.nextn_accept_rates is not None:
        try:
            args.rates = [float(x) for x in args.nextn_accept_rates.split(",") if x.strip()]
        except ValueError:
            ap.error(f"--nextn-accept-rates: not a comma-separated list of numbers: {args.nextn_accept_rates!r}")
    else:
        args.rates = None

    py, where = find_dynamo_python(args.dynamo_python)
    if py is None:
        print(f"SKIPPED: Dynamo is not available ({where}); set --dynamo-python or $DYNOSIM_DYNAMO_PYTHON")
        return 0
    with tempfile.TemporaryDirectory(prefix="agree_") as tmp:
        return compare(args, py, Path(tmp))


def compare(args, py: str, tmp: Path) -> int:
    kw = dict(block_size=args.block_size, num_gpu_blocks=args.num_gpu_blocks, arrival_speedup=args.arrival_speedup)
    if args.prefill_workers or args.decode_workers:
        # Llama-3.1-8B in bf16: 32 layers x K,V x 8 KV heads x 128 dims x 2 bytes
        kw["disagg"] = dict(prefill_workers=args.prefill_workers, decode_workers=args.decode_workers,
                            bandwidth_gbps=args.kv_bandwidth,
                            model={"layers": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16"},
                            bytes_per_token=131_072)
    ours_extra, theirs_extra = None, {}
    if args.nextn:
        seed = 42 if args.mtp_seed is None else args.mtp_seed  # Dynamo's default, stated so both sides agree
        ours_extra = {"nextn": args.nextn, "nextn_accept_rates": args.rates, "mtp_seed": seed}
        theirs_extra = {"nextn": args.nextn, "nextn_accept_rates": args.rates, "mtp_seed": seed}
    ours, theirs = [], []
    for i in range(args.runs):
        per = args.per_request and i == 0
        ours.append(run_dynosim(args.trace, args.workers, args.router_mode, seed=i, engine_extra=ours_extra,
                                requests_out=str(tmp / "ours.parquet") if per else None, **kw)["summary"])
        theirs.append(run_dynamo(py, args.trace, args.workers, args.router_mode, **theirs_extra,
                                 requests_out=str(tmp / "dyn.jsonl") if per else None, **kw)["report"])
    pools = (f"{args.prefill_workers} prefill + {args.decode_workers} decode workers, KV at {args.kv_bandwidth} GB/s"
             if "disagg" in kw else f"{args.workers} workers")
    print(f"trace {args.trace}; {pools}, router {args.router_mode}, block {args.block_size}, "
          f"{args.num_gpu_blocks} blocks, arrival ×{args.arrival_speedup}; {args.runs} run(s) per side")
    if args.nextn:
        print(f"speculative decoding: nextn {args.nextn}, accept rates "
              f"{args.nextn_accept_rates or 'default (0.85,0.3,0,...)'}, mtp seed {ours_extra['mtp_seed']} "
              "(worker w: seed + w); polynomial timing on both sides")
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
        d_reuse = (m["reused_tokens"] - m["reused_input_tokens"]).abs()
        ok_ttft, ok_e2e, ok_reuse = d_ttft <= 1e-3, d_e2e <= 1e-3, d_reuse == 0
        close = ok_ttft & ok_e2e & ok_reuse
        ambiguous = int(dyn["trace_index_ambiguous"].eq(True).sum()) if "trace_index_ambiguous" in dyn else 0
        print(f"per request: {int(close.sum()):,} of {len(m):,} match on all three "
              f"(dynosim {len(mine):,} rows, Dynamo {len(dyn):,} records, {len(m):,} paired by trace line; "
              f"{ambiguous} Dynamo records with an ambiguous trace line)")
        print(f"  TTFT within 1e-3 ms: {int(ok_ttft.sum()):,}   max |ΔTTFT| {d_ttft.max():.6f} ms")
        print(f"  E2E  within 1e-3 ms: {int(ok_e2e.sum()):,}   max |ΔE2E|  {d_e2e.max():.6f} ms")
        print(f"  reused tokens equal: {int(ok_reuse.sum()):,}   max |Δreused| {int(d_reuse.max())} tokens")
    print("ALL PASS" if not missed else f"{missed} metric(s) MISS")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
