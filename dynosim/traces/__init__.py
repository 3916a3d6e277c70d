"""Traces: loading Mooncake-style JSONL into sessions and turns (``mooncake``), inspecting them
(``inspect``), converting other formats (``convert``) and writing seeded synthetic agentic traces
(``synth``).

May import: numpy, pydantic, rich (inspection output), zstandard/gzip, ``dynosim.metrics.stats``.
Nothing of the simulator, router or engines: a trace is plain data both worlds read.
"""

from dynosim.traces.inspect import format_inspection, inspect_trace
from dynosim.traces.mooncake import Session, Trace, TraceError, TraceRow, Turn, iter_rows, load_trace

__all__ = [
    "Session", "Trace", "TraceError", "TraceRow", "Turn",
    "format_inspection", "inspect_trace", "iter_rows", "load_trace",
]
