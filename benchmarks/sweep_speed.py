"""Sweep throughput: a 100-point sweep on the bundled trace sample, serial vs the local process pool.

Why: a sweep is the main job; on a laptop or a CI box it should use every
core. What: the same 100 points (5 deployments on 16 GPUs × 2 routers × 10
loads) run once serially and once on the process pool (all cores), each into
a fresh folder; prints wall time, points/s, the parallel/serial ratio
(target ≥ 1.7× on 2 cores), peak RSS of the parent and of the largest worker,
and checks both runs gave identical results.

    .venv/bin/python benchmarks/sweep_speed.py [--trace FILE] [--jobs N] [--limit ROWS]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynosim.sweeps.spec import SweepSpec, expand  # noqa: E402
from dynosim.sweeps.sweep import sweep  # noqa: E402

SPEC = SweepSpec(gpu_budget=16, modes=["agg", "disagg"], prefill_fractions=[0.125, 0.25, 0.5, 0.75],
                 router_modes=["kv", "round-robin"], arrival_speedups=[float(x) for x in range(1, 11)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(ROOT / "examples" / "traces" / "conversation_1k.jsonl"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    n = len(expand(SPEC))
    print(f"{n} points on {args.trace} ({args.limit or 'all'} rows); {os.cpu_count()} cores, pool of {args.jobs}")
    walls = {}
    frames = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, executor, jobs in (("serial", "serial", 1), ("parallel", "local", args.jobs)):
            t0 = time.perf_counter()
            res = sweep(args.trace, SPEC, Path(tmp) / name, executor=executor, jobs=jobs, limit=args.limit)
            walls[name] = time.perf_counter() - t0
            frames[name] = res.results.drop(columns=["wall_s"])
            print(f"{name:>8}: {walls[name]:7.1f} s, {n / walls[name]:5.2f} points/s")
    ratio = walls["serial"] / walls["parallel"]
    same = frames["serial"].equals(frames["parallel"])
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"parallel/serial speed ratio: {ratio:.2f}x ({'PASS' if ratio >= 1.7 else 'MISS'}: target >= 1.7x "
          f"on 2 cores)")
    print(f"peak RSS: parent {self_mb:.0f} MB, largest worker {child_mb:.0f} MB")
    print(f"identical results serial vs parallel: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
