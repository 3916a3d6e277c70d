"""Indexer speed: replay a recorded simulation's KV events and lookups through indexers.

Runs the Mooncake conversation trace on 16 KV-routed workers once, recording
every Stored/Removed event and every routing lookup in order, then replays
that exact stream through:

- ``KvIndexer`` (dynosim: one hash set per worker, bulk C-level set updates),
- the naive nested-dict radix tree (a dict of children per node keyed by block
  hash, a worker set per node: the textbook design),
- flat per-worker dicts updated block by block in Python,

and prints operations per second (events + lookups) and the ratios. All three
must return identical prefix depths (checked on every lookup).

    .venv/bin/python benchmarks/indexer_speed.py [--trace PATH] [--workers 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynosim.config import RunConfig  # noqa: E402
from dynosim.router.indexer import KvIndexer  # noqa: E402
from dynosim.router.router import Router  # noqa: E402
from dynosim.sim.simulation import simulate  # noqa: E402
from dynosim.traces.mooncake import load_trace  # noqa: E402


class NaiveIndexer:
    def __init__(self, n: int):
        self.held: list[dict[int, bool]] = [{} for _ in range(n)]

    def apply(self, w, event):
        kind, hashes, _ = event
        d = self.held[w]
        if kind == "stored":
            for h in hashes:
                d[h] = True
        else:
            for h in hashes:
                d.pop(h, None)

    def depths(self, hashes):
        out = []
        for d in self.held:
            k = 0
            for h in hashes:
                if h not in d:
                    break
                k += 1
            out.append(k)
        return out


class RadixIndexer:
    """Nodes keyed by block hash under their parent; each node keeps its worker set."""

    def __init__(self, n: int):
        self.n = n
        self.root: dict = {}
        self.node_of: dict[int, dict] = {}  # hash -> node {"w": set, "c": children, "p": parent dict}

    def apply(self, w, event):
        kind, hashes, parent = event
        if kind == "stored":
            children = self.root if parent is None else self.node_of.get(parent, {"c": self.root})["c"]
            for h in hashes:
                node = self.node_of.get(h)
                if node is None:
                    node = {"w": set(), "c": {}}
                    children[h] = node
                    self.node_of[h] = node
                node["w"].add(w)
                children = node["c"]
        else:
            for h in hashes:
                node = self.node_of.get(h)
                if node is not None:
                    node["w"].discard(w)

    def depths(self, hashes):
        out = [0] * self.n
        alive = set(range(self.n))
        node = None
        for i, h in enumerate(hashes):
            node = self.node_of.get(h)
            here = node["w"] if node is not None else set()
            for w in alive - here:
                out[w] = i
            alive &= here
            if not alive:
                return out
        for w in alive:
            out[w] = len(hashes)
        return out


def record(trace_path: str, workers: int):
    """Every KV event and routing lookup of one kv-routed run, in order (the Router's two entry points are
    wrapped for the run and restored after it)."""
    ops: list[tuple] = []
    on_kv_event, assign = Router.on_kv_event, Router._assign

    def recording_event(self, worker, event):
        ops.append((0, worker, event))
        on_kv_event(self, worker, event)

    def recording_assign(self, req, now):
        ops.append((1, req.seq_hashes))
        return assign(self, req, now)

    Router.on_kv_event, Router._assign = recording_event, recording_assign
    try:
        simulate(load_trace(trace_path), RunConfig(workers=workers, router_mode="kv"))
    finally:
        Router.on_kv_event, Router._assign = on_kv_event, assign
    return ops


def replay(indexer, ops) -> tuple[float, list]:
    apply, depths = indexer.apply, indexer.depths
    answers = []
    t = time.perf_counter()
    for op in ops:
        if op[0] == 0:
            apply(op[1], op[2])
        else:
            answers.append(depths(op[1]))
    return time.perf_counter() - t, answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(ROOT.parent / "shared" / "traces" / "conversation_trace.jsonl"))
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="best of N replays per indexer")
    args = ap.parse_args()
    if not Path(args.trace).exists():
        print(f"trace not found: {args.trace}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    ops = record(args.trace, args.workers)
    n_events = sum(1 for o in ops if o[0] == 0)
    n_lookups = len(ops) - n_events
    n_blocks = sum(len(o[2].block_hashes) for o in ops if o[0] == 0)
    print(f"recorded {n_events:,} KV events ({n_blocks:,} blocks) and {n_lookups:,} lookups "
          f"from {args.trace} on {args.workers} workers in {time.perf_counter() - t:.1f} s")
    results = {}
    reference = None
    for name, cls in (("dynosim KvIndexer", KvIndexer), ("nested-dict radix", RadixIndexer),
                      ("flat per-worker dict", NaiveIndexer)):
        best = float("inf")
        for _ in range(args.repeat):
            secs, answers = replay(cls(args.workers), ops)
            best = min(best, secs)
        if reference is None:
            reference = answers
        elif answers != reference:
            print(f"MISMATCH: {name} answers differ from KvIndexer", file=sys.stderr)
            return 1
        results[name] = best
        print(f"{name:22s} {best:7.3f} s   {len(ops) / best:12,.0f} ops/s   "
              f"{(n_blocks + sum(len(o[1]) for o in ops if o[0] == 1)) / best:14,.0f} block-ops/s")
    base = results["dynosim KvIndexer"]
    for name in ("nested-dict radix", "flat per-worker dict"):
        print(f"speed-up of KvIndexer over {name}: {results[name] / base:.1f}x")
    print("all indexers returned identical prefix depths on every lookup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
