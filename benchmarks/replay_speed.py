"""Replay speed and memory: dynosim vs Dynamo's compiled offline replay, side by side.

Replays the whole Mooncake conversation trace (12,031 requests, ~59 simulated
minutes) on 16 workers (block 64, 16,384 blocks) and prints wall seconds,
simulated seconds, × real time and peak RSS for dynosim (in a child process:
trace loading + simulation + summary) and, when Dynamo is installed, for
``dynamo.replay`` with the same settings (its replay call only), then the
ratios. Targets: dynosim at least as fast, peak RSS no higher.

    .venv/bin/python benchmarks/replay_speed.py [--router-mode round-robin|kv] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys

from _common import DEFAULT_TRACE, find_dynamo_python, run_dynamo, run_dynosim


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--router-mode", default="round-robin", choices=["round-robin", "kv", "random", "least-loaded"])
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs on each side")
    ap.add_argument("--dynamo-python", default=None, help="python of a venv with ai-dynamo (or $DYNOSIM_DYNAMO_PYTHON)")
    args = ap.parse_args()

    best = None
    for _ in range(args.repeat):
        r = run_dynosim(args.trace, args.workers, args.router_mode)
        if best is None or r["wall_s"] < best["wall_s"]:
            best = r
    s = best["summary"]
    sim_s = s["duration_s"]
    n = s["requests"]["total"]
    print(f"trace {args.trace}: {n:,} requests, {sim_s:,.0f} simulated s; {args.workers} workers, "
          f"router {args.router_mode}, block 64, 16384 blocks")
    print(f"dynosim : wall {best['wall_s']:.2f} s (simulation {best['sim_wall_s']:.2f} s), "
          f"{sim_s / best['wall_s']:,.0f}x real time, {n / best['wall_s']:,.0f} requests/s, "
          f"peak RSS {best['peak_rss_mb']:.0f} MB")

    py = find_dynamo_python(args.dynamo_python)
    if py is None or args.router_mode not in ("round-robin", "kv"):
        print("Dynamo: SKIPPED (not installed, or no equivalent router mode); no ratio printed")
        return 0
    dyn = None
    for _ in range(args.repeat):
        d = run_dynamo(py, args.trace, args.workers, args.router_mode)
        if dyn is None or d["wall_s"] < dyn["wall_s"]:
            dyn = d
    dsim = dyn["report"]["duration_ms"] / 1000
    print(f"Dynamo {dyn.get('dynamo_version', '?')}: wall {dyn['wall_s']:.2f} s, {dsim / dyn['wall_s']:,.0f}x real time, "
          f"peak RSS {dyn['peak_rss_mb']:.0f} MB")
    speed = dyn["wall_s"] / best["wall_s"]
    rss = best["peak_rss_mb"] / dyn["peak_rss_mb"]
    print(f"speed ratio dynosim/Dynamo: {speed:.2f}x  ({'PASS' if speed >= 1.0 else 'MISS'}: target >= 1.0)")
    print(f"RSS ratio dynosim/Dynamo:   {rss:.2f}   ({'PASS' if rss <= 1.0 else 'MISS'}: target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
