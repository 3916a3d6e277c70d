"""What the timeline (on by default in ``dynosim run``) costs: wall time with and without it.

Why: the timeline is sampled during every run, so it must stay cheap (target: under 5% more
wall time). What: runs ``dynosim run`` as a user does (a fresh process each time: imports,
trace loading, simulation, tables; no ``--out``) on the bundled trace, alternating
``--timeline-points 0`` and the default, ``--repeat`` times each, for an aggregated deployment
(4 workers) and the disaggregated ``examples/disagg_4p12d.yaml``; prints the medians of wall and
CPU seconds (CPU time is steadier on a shared machine) and the overhead. Also checks that both
runs print the same summary JSON apart from wall-clock fields. Then, in this process, the
timeline's own work: CPU time inside its samples and the frame build as a share of the
simulation's CPU time (steady even when other jobs load the machine and blur the medians).
``--instructions`` instead counts the instructions of one run each way under valgrind's
callgrind with a fixed hash seed and one BLAS thread (deterministic, whatever the load; about ten
minutes).

    .venv/bin/python benchmarks/timeline_overhead.py [--repeat 7] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DYNOSIM = str(Path(sys.executable).with_name("dynosim"))
TRACE = str(ROOT / "examples" / "traces" / "conversation_1k.jsonl")
CASES = {"agg 4 workers": ["--workers", "4"],
         "disagg 4P12D": ["--config", str(ROOT / "examples" / "disagg_4p12d.yaml")]}


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def once(args: list[str], points: int) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one ``dynosim run`` process, and its summary less the wall-clock figures."""
    t0, c0 = time.perf_counter(), cpu_children()
    out = subprocess.run([DYNOSIM, "run", "--trace", TRACE, *args, "--timeline-points", str(points), "--json"],
                         check=True, capture_output=True, text=True).stdout
    wall, cpu = time.perf_counter() - t0, cpu_children() - c0
    summary = json.loads(out)
    summary.pop("run")
    return wall, cpu, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--instructions", action="store_true", help="count instructions under callgrind instead")
    a = ap.parse_args()
    if a.instructions:
        return instructions()
    worst = 0.0
    for name, args in CASES.items():
        walls: dict[int, list[float]] = {0: [], 300: []}
        cpus: dict[int, list[float]] = {0: [], 300: []}
        summaries = {}
        once(args, 300)  # warm the file cache
        for _ in range(a.repeat):
            for points in (0, 300):
                w, c, s = once(args, points)
                walls[points].append(w)
                cpus[points].append(c)
                summaries[points] = s
        off, on = statistics.median(walls[0]), statistics.median(walls[300])
        c_off, c_on = statistics.median(cpus[0]), statistics.median(cpus[300])
        same = json.dumps(summaries[0], sort_keys=True) == json.dumps(summaries[300], sort_keys=True)
        worst = max(worst, on / off - 1)
        print(f"{name}: median wall {off:.3f} s without, {on:.3f} s with the timeline ({100 * (on / off - 1):+.1f}%); "
              f"CPU {c_off:.3f} s vs {c_on:.3f} s ({100 * (c_on / c_off - 1):+.1f}%); {a.repeat} alternating runs "
              f"each; summaries identical: {same}")
        if not same:
            return 1
    print(f"worst median wall overhead {100 * worst:+.1f}% (target < 5%): {'PASS' if worst < 0.05 else 'MISS'}")
    direct = max(direct_cost(name, args) for name, args in CASES.items())
    print(f"worst direct cost {100 * direct:.2f}% (target < 5%): {'PASS' if direct < 0.05 else 'MISS'}")
    return 0 if worst < 0.05 and direct < 0.05 else 1


def instructions() -> int:
    """Instructions of one ``dynosim run`` each way, under callgrind (both runs at once)."""
    import re
    import shutil
    import tempfile

    if shutil.which("valgrind") is None:
        print("valgrind not found: SKIPPED")
        return 0
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        # fixed hash seed, no BLAS threads spinning, bytecode caches written first: what is left is the work
        env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
        for name, args in CASES.items():
            once(args, 300)
            procs = {points: subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.{points}", sys.executable, "-m",
                 "dynosim.cli", "run", "--trace", TRACE, *args, "--timeline-points", str(points), "--json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                env=env) for points in (0, 300)}
            refs = {}
            for points, p in procs.items():
                err = p.communicate()[1]
                refs[points] = int(re.search(r"I\s+refs:\s+([\d,]+)", err).group(1).replace(",", ""))
            extra = refs[300] / refs[0] - 1
            worst = max(worst, extra)
            print(f"{name}: {refs[0]:,} instructions without, {refs[300]:,} with the timeline ({100 * extra:+.2f}%)")
    print(f"worst instruction overhead {100 * worst:+.2f}% (target < 5%): {'PASS' if worst < 0.05 else 'MISS'}")
    return 0 if worst < 0.05 else 1


def direct_cost(name: str, args: list[str]) -> float:
    """CPU time the sampler's events and the frame take, over the simulation's CPU time (median of 3)."""
    import yaml

    from dynosim.config import RunConfig
    from dynosim.metrics import timeline
    from dynosim.sim.simulation import simulate
    from dynosim.traces.mooncake import load_trace

    cfg = RunConfig(**yaml.safe_load(open(args[1]))) if args[0] == "--config" else RunConfig(workers=int(args[1]))
    trace = load_trace(TRACE)
    spent = [0.0]
    tick = timeline.TimelineSampler._tick

    def timed(self):
        t = time.thread_time()
        tick(self)
        spent[0] += time.thread_time() - t

    timeline.TimelineSampler._tick = timed
    shares = []
    try:
        for _ in range(3):
            spent[0] = 0.0
            t = time.thread_time()
            st = simulate(trace, cfg, timeline_points=300)
            sim = time.thread_time() - t
            t = time.thread_time()
            st.extra["timeline"].frame()
            spent[0] += time.thread_time() - t
            shares.append(spent[0] / sim)
    finally:
        timeline.TimelineSampler._tick = tick
    share = statistics.median(shares)
    print(f"{name}: sampling + frame take {100 * share:.2f}% of the simulation's CPU time")
    return share


if __name__ == "__main__":
    sys.exit(main())
