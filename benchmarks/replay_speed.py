"""Replay speed and memory: dynosim vs Dynamo's compiled offline replay, side by side.

Why: dynosim is meant to be at least as fast as ``dynamo.replay`` and use no
more memory. What: replays the whole Mooncake conversation trace (12,031
requests, ~59 simulated minutes) on 16 workers (block 64, 16,384 blocks,
round-robin) and prints wall seconds (total, and simulation only), simulated
seconds, × real time, requests per wall second and peak RSS for dynosim, run
in a child process (trace loading + simulation + summary; imports excluded).
When Dynamo is installed (--dynamo-python, $DYNOSIM_DYNAMO_PYTHON, or
/work/dynvenv/bin/python) it runs ``benchmarks/dynamo_ref.py`` with the same
settings (its ``run_trace_replay`` call, which loads the trace itself), then
prints the ratios with PASS/MISS against the targets: dynosim at least as fast,
peak RSS no higher. Without Dynamo it says SKIPPED and exits 0.

    .venv/bin/python benchmarks/replay_speed.py [--router-mode round-robin|kv] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys

from _common import (DEFAULT_TRACE, DYNAMO_MODES, DYNOSIM_MODES, find_dynamo_python, parent_rss_mb, run_dynamo,
                     run_dynosim)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(DEFAULT_TRACE), help="Mooncake JSONL trace (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=16, help="aggregated workers (default: %(default)s)")
    ap.add_argument("--router-mode", default="round-robin", choices=DYNOSIM_MODES,
                    help=f"dynosim router mode; Dynamo runs only for {list(DYNAMO_MODES)} (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="best (lowest wall) of N runs on each side (default: 1)")
    ap.add_argument("--dynamo-python", default=None, help="python of a venv with ai-dynamo (or $DYNOSIM_DYNAMO_PYTHON)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    best = None
    for _ in range(args.repeat):
        r = run_dynosim(args.trace, args.workers, args.router_mode)
        if best is None or r["wall_s"] < best["wall_s"]:
            best = r
    s = best["summary"]
    sim_s = s["duration_s"]
    n = s["requests"]["total"]
    print(f"trace {args.trace}: {n:,} requests; {args.workers} workers, "
          f"router {args.router_mode}, block 64, 16384 blocks; best of {args.repeat}")
    print(f"dynosim : wall {best['wall_s']:.2f} s (simulation {best['sim_wall_s']:.2f} s), {sim_s:,.1f} simulated s, "
          f"{sim_s / best['wall_s']:,.0f}x real time, {n / best['wall_s']:,.0f} requests/s, "
          f"peak RSS {best['peak_rss_mb']:.0f} MB")

    if args.router_mode not in DYNAMO_MODES:
        print(f"Dynamo  : SKIPPED (Dynamo's replay has no equivalent of router mode {args.router_mode!r}; "
              f"it has {list(DYNAMO_MODES)}); no ratios")
        return 0
    py, where = find_dynamo_python(args.dynamo_python)
    if py is None:
        print(f"Dynamo  : SKIPPED (not found: {where}; set --dynamo-python or $DYNOSIM_DYNAMO_PYTHON); no ratios")
        return 0
    dyn = None
    for _ in range(args.repeat):
        d = run_dynamo(py, args.trace, args.workers, args.router_mode)
        if dyn is None or d["wall_s"] < dyn["wall_s"]:
            dyn = d
    dsim = dyn["report"]["duration_ms"] / 1000
    dn = dyn["report"].get("num_requests") or n
    print(f"Dynamo {dyn.get('dynamo_version', '?')}: wall {dyn['wall_s']:.2f} s, {dsim:,.1f} simulated s, "
          f"{dsim / dyn['wall_s']:,.0f}x real time, {dn / dyn['wall_s']:,.0f} requests/s, "
          f"peak RSS {dyn['peak_rss_mb']:.0f} MB  [{py}]")
    speed = dyn["wall_s"] / best["wall_s"]
    rss = best["peak_rss_mb"] / dyn["peak_rss_mb"]
    print(f"speed ratio dynosim/Dynamo: {speed:.3f}x ({'PASS' if speed >= 1.0 else 'MISS'}: target >= 1.0)")
    print(f"RSS ratio dynosim/Dynamo:   {rss:.3f}  ({'PASS' if rss <= 1.0 else 'MISS'}: target <= 1.0)")
    own = parent_rss_mb()
    if own > 0.2 * min(best["peak_rss_mb"], dyn["peak_rss_mb"]):
        print(f"warning: this process peaked at {own:.0f} MB; children's peak RSS may include it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
