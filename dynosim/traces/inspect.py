"""Trace inspection: the numbers that decide how a trace will stress a deployment.

Before replaying a trace one wants its load (rate, span), its shape (ISL,
OSL, blocks per request) and how much prefix caching could possibly help.
The last is an upper bound: requests in file order, each one's hit is the run
of its leading ``hash_ids`` already present in a prefix trie of all earlier
requests, i.e. one shared cache of infinite size. Real per-worker hit rates
are lower; a replay whose reuse exceeds this bound is wrong.

Percentiles are nearest-rank, as in Dynamo's replay report (so p99 ISL of the
Mooncake conversation trace is 85,401 where numpy's linear rule gives 85,400).
"""

from __future__ import annotations

import os

import numpy as np
from rich.table import Table

from dynosim.metrics.stats import distribution
from dynosim.traces.mooncake import TraceError, iter_rows

_STAT_KEYS = ("mean", "p50", "p90", "p99", "max")


def _stats(values) -> dict[str, float]:
    d = distribution(values)
    return {k: d[k] for k in _STAT_KEYS}


def inspect_trace(path, trace_block_size: int = 512) -> dict:
    """Summary statistics and the infinite-cache prefix-reuse bound of a trace."""
    isl, osl, n_blocks, hits = [], [], [], []
    timestamps = []
    sessions: set[str] = set()
    n_sessionless = 0
    trie: dict[tuple[int, int], int] = {}  # (parent node, hash_id) -> node; node 0 is the root
    unique_ids: set[int] = set()
    for row in iter_rows(path, trace_block_size):
        isl.append(row.input_length)
        osl.append(row.output_length)
        n_blocks.append(len(row.hash_ids))
        if row.timestamp_ms is not None:
            timestamps.append(row.timestamp_ms)
        if row.session_id is None:
            n_sessionless += 1
        else:
            sessions.add(row.session_id)
        unique_ids.update(row.hash_ids)

        node, hit, matching = 0, 0, True
        for h in row.hash_ids:
            child = trie.get((node, h))
            if child is None:
                matching = False
                child = trie[(node, h)] = len(trie) + 1
            elif matching:
                hit += 1
            node = child
        hits.append(hit)

    if not isl:
        raise TraceError(os.fspath(path), None, None, "no requests in trace")
    isl_a = np.asarray(isl, dtype=np.int64)
    blocks_a = np.asarray(n_blocks, dtype=np.int64)
    hits_a = np.asarray(hits, dtype=np.int64)
    hit_tokens = np.minimum(hits_a * trace_block_size, isl_a)
    span_s = (max(timestamps) - min(timestamps)) / 1000.0 if timestamps else 0.0
    n = len(isl)
    return {
        "path": str(path),
        "trace_block_size": trace_block_size,
        "n_requests": n,
        "n_sessions": n_sessionless + len(sessions),
        "span_s": span_s,
        "rate_rps": n / span_s if span_s > 0 else float("nan"),
        "isl": _stats(isl_a),
        "osl": _stats(osl),
        "blocks_per_request": _stats(blocks_a),
        "block_occurrences": int(blocks_a.sum()),
        "unique_hash_ids": len(unique_ids),
        "input_tokens": int(isl_a.sum()),
        "reuse_bound_tokens": float(hit_tokens.sum() / isl_a.sum()),
        "reuse_bound_blocks": float(hits_a.sum() / blocks_a.sum()),
        "requests_reusing_2plus_blocks": int((hits_a >= 2).sum()),
    }


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 1000 else f"{x:,.1f}"


def format_inspection(d: dict) -> Table:
    """A rich table of ``inspect_trace`` output for the CLI."""
    table = Table(title=f"trace {d['path']}", show_header=True, header_style="bold")
    table.add_column("metric", overflow="fold")  # a narrow terminal wraps the names, never cuts a figure
    for k in _STAT_KEYS:
        table.add_column(k, justify="right", no_wrap=True)
    for key, label in (("isl", "input tokens (ISL)"), ("osl", "output tokens (OSL)"),
                       ("blocks_per_request", f"blocks/request ({d['trace_block_size']} tok)")):
        table.add_row(label, *(_fmt(d[key][k]) for k in _STAT_KEYS))
    table.add_section()
    blank = [""] * (len(_STAT_KEYS) - 1)
    for label, value in (
        ("requests", f"{d['n_requests']:,}"),
        ("sessions", f"{d['n_sessions']:,}"),
        ("span", f"{d['span_s']:,.1f} s"),
        ("mean rate", f"{d['rate_rps']:.2f} req/s"),
        ("block occurrences", f"{d['block_occurrences']:,}"),
        ("unique hash ids", f"{d['unique_hash_ids']:,}"),
        ("reuse bound (tokens)", f"{d['reuse_bound_tokens']:.3f}"),
        ("reuse bound (blocks)", f"{d['reuse_bound_blocks']:.3f}"),
        ("requests reusing >=2 blocks", f"{d['requests_reusing_2plus_blocks']:,}"),
    ):
        table.add_row(label, value, *blank)
    return table
