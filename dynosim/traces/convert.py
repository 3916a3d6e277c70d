"""Cut and shrink traces: a window of rows, token lengths scaled down to fit a small model.

``shrink`` keeps a trace's structure (arrival times, sessions, which requests
share which prefix blocks) and divides every token length by ``token_scale``:
input and output lengths are rounded up, and the trace block size becomes
``trace_block_size / token_scale``, so hash-id prefixes still cover exactly
the shared tokens. That is how a production trace (prompts of thousands of
tokens) drives a tiny CPU model with a 2,048-token context in ``validate``.
Rows that would still not fit ``max_total_tokens`` are left out and counted,
never dropped silently.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from dynosim.traces.mooncake import iter_rows


@dataclass
class ShrinkResult:
    rows: list[dict]
    trace_block_size: int
    dropped_too_long: int
    scanned: int


def shrink(path, *, token_scale: int = 1, trace_block_size: int = 512, skip: int = 0, limit: int | None = None,
           max_total_tokens: int | None = None) -> ShrinkResult:
    """Rows ``skip .. skip+limit`` of ``path``, token lengths divided by ``token_scale``."""
    if type(token_scale) is not int or token_scale < 1:
        raise ValueError(f"token_scale must be a positive integer, got {token_scale!r}")
    if trace_block_size % token_scale:
        raise ValueError(f"token_scale {token_scale} must divide the trace block size {trace_block_size}")
    if skip < 0 or (limit is not None and limit < 1):
        raise ValueError("skip must be >= 0 and limit >= 1")
    new_tbs = trace_block_size // token_scale
    rows: list[dict] = []
    dropped = scanned = total = 0
    for i, r in enumerate(iter_rows(path, trace_block_size)):
        total = i + 1
        if i < skip:
            continue
        if limit is not None and len(rows) >= limit:
            break
        scanned += 1
        isl = max(1, math.ceil(r.input_length / token_scale))
        osl = max(1, math.ceil(r.output_length / token_scale))
        if max_total_tokens is not None and isl + osl > max_total_tokens:
            dropped += 1
            continue
        row = dict(r.extra)
        if r.timestamp_ms is not None:
            row["timestamp"] = r.timestamp_ms
        row.update(input_length=isl, output_length=osl, hash_ids=list(r.hash_ids[:math.ceil(isl / new_tbs)]))
        if r.session_id is not None:
            row["session_id"] = r.session_id
        if r.delay_ms is not None:
            row["delay"] = r.delay_ms
        if r.priority is not None:
            row["priority"] = r.priority
        rows.append(row)
    if not rows:
        why = f"the file has {total} row(s) and --skip is {skip}" if scanned == 0 else \
            f"all {scanned} row(s) scanned are longer than {max_total_tokens} tokens (--max-total-tokens)"
        raise ValueError(f"{os.fspath(path)}: no rows to write: {why}")
    return ShrinkResult(rows, new_tbs, dropped, scanned)
