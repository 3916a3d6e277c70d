"""Every pass of a run as Chrome / Perfetto trace-event JSON (``dynosim run --trace-events FILE``).

One process per pool (``agg``, ``prefill``, ``decode``), one thread (track) per worker slot, one
complete event (``ph: "X"``) per pass: ``ts`` and ``dur`` in microseconds since the first
arrival (the timeline's origin), ``name`` the pass's kind and ``args`` its kind, batch size
(requests scheduled) and tokens scheduled (token budget used) and prefill tokens. Kinds:
``prefill`` (every scheduled token is a prompt token), ``decode`` (none is; a decode worker's
admitted prompts arrive by hand-off and cost no prefill) and ``mixed``. Open the file at
https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
from pathlib import Path

from dynosim.metrics.timeline import POOL_NAMES

POOL_ORDER = ("agg", "prefill", "decode")


def pass_kind(scheduled_tokens: int, prefill_tokens: int) -> str:
    if prefill_tokens <= 0:
        return "decode"
    return "prefill" if prefill_tokens >= scheduled_tokens else "mixed"


def trace_events(logs: dict[tuple[str, int], list], t0_ms: float = 0.0) -> dict:
    """The trace-event document for pass logs keyed by (pool role, worker slot).

    Each log holds ``(start ms, duration ms, batch, scheduled tokens, prefill tokens)`` per pass;
    times are shifted so ``t0_ms`` (the first arrival) is 0.
    """
    events: list[dict] = []
    pools = sorted({POOL_NAMES[role] for role, _ in logs}, key=POOL_ORDER.index)
    pid_of = {name: i + 1 for i, name in enumerate(pools)}
    for name in pools:
        events.append({"name": "process_name", "ph": "M", "pid": pid_of[name], "tid": 0,
                       "args": {"name": f"pool {name}"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid_of[name], "tid": 0,
                       "args": {"sort_index": pid_of[name]}})
    for (role, wid), log in sorted(logs.items(), key=lambda kv: (pid_of[POOL_NAMES[kv[0][0]]], kv[0][1])):
        pid = pid_of[POOL_NAMES[role]]
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": wid,
                       "args": {"name": f"worker {wid}"}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": wid,
                       "args": {"sort_index": wid}})
        for start, dur, batch, tokens, prefill in log:
            kind = pass_kind(tokens, prefill)
            events.append({"name": kind, "cat": "pass", "ph": "X", "pid": pid, "tid": wid,
                           "ts": round((start - t0_ms) * 1000.0, 3), "dur": round(dur * 1000.0, 3),
                           "args": {"kind": kind, "batch": batch, "scheduled_tokens": tokens,
                                    "prefill_tokens": prefill}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"source": "dynosim", "time_origin": "first arrival"}}


def write_trace_events(logs: dict[tuple[str, int], list], path: str | Path, t0_ms: float = 0.0) -> int:
    """Write the trace-event JSON to ``path``; returns the number of passes written."""
    doc = trace_events(logs, t0_ms)
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    return sum(len(log) for log in logs.values())
