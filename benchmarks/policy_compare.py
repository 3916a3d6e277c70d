"""Every routing policy on the same traces: prefix reuse, TTFT p50/p99, ITL, throughput.

    .venv/bin/python benchmarks/policy_compare.py [--trace FILE ...] [--workers 16] [--seed 0]

Defaults to the Mooncake conversation trace; pass an agentic trace written by
``dynosim trace synth`` as a second ``--trace`` to compare on it too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dynosim  # noqa: E402
from dynosim.router.policies import POLICIES  # noqa: E402
from dynosim.traces.mooncake import load_trace  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", action="append", default=None)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", default=",".join(p for p in POLICIES if p != "direct"),
                    help="comma list (direct needs worker hints in the trace)")
    ap.add_argument("--arrival-speedup", type=float, default=1.0)
    args = ap.parse_args()
    traces = args.trace or [str(ROOT.parent / "shared" / "traces" / "conversation_trace.jsonl")]
    for path in traces:
        trace = load_trace(path, speedup=args.arrival_speedup)
        print(f"\n{path}: {trace.n_requests:,} requests, {args.workers} workers, seed {args.seed}")
        print(f"{'policy':24s} {'reuse':>7s} {'TTFT p50':>10s} {'TTFT p99':>10s} {'ITL mean':>9s} "
              f"{'out tok/s':>10s} {'wall s':>7s}")
        for mode in args.policies.split(","):
            t = time.perf_counter()
            s = dynosim.run(trace, workers=args.workers, router_mode=mode, seed=args.seed,
                            arrival_speedup=args.arrival_speedup).summary
            print(f"{mode:24s} {s['prefix_reuse_ratio']:7.4f} {s['ttft_ms']['p50']:10.1f} {s['ttft_ms']['p99']:10.1f} "
                  f"{s['itl_ms']['mean']:9.2f} {s['throughput']['output_tokens_per_s']:10.1f} "
                  f"{time.perf_counter() - t:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
