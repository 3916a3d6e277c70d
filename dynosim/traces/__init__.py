"""Trace loading (Mooncake JSONL) and inspection."""

from dynosim.traces.inspect import format_inspection, inspect_trace
from dynosim.traces.mooncake import Session, Trace, TraceError, TraceRow, Turn, iter_rows, load_trace

__all__ = [
    "Session", "Trace", "TraceError", "TraceRow", "Turn",
    "format_inspection", "inspect_trace", "iter_rows", "load_trace",
]
