"""Streaming, strictly validated loader for Mooncake-style JSONL traces.

This reads the format Dynamo's replay accepts (``--trace-format mooncake``,
``lib/mocker/src/loadgen/trace.rs`` ``Trace::from_mooncake``) and groups rows
into sessions the same way, so a replay here sees the same arrivals and
closed-loop turn delays as ``python -m dynamo.replay``.

Row fields (one JSON object per line; blank lines are skipped):

- ``timestamp`` | ``created_time``: arrival in ms (first turns) or the
  nominal time of a later turn, used only to derive its delay.
- ``input_length`` | ``input_tokens``: prompt tokens; default
  ``len(hash_ids) * trace_block_size``.
- ``output_length`` | ``output_tokens``: required, >= 1.
- ``hash_ids``: required, non-negative ints < 2**64, one per trace block.
  Blocks become tokens ``hash_id as u32`` (Dynamo's rule); when a trace holds
  ids ≥ 2**32 that would alias distinct prefixes, so every id is renumbered
  densely in order of first appearance instead (``Trace.notes`` says so).
- ``session_id`` (str, or int taken as its decimal string),
  ``delay`` | ``delay_ms`` (ms, >= 0), ``priority`` (int).
- Any other key is kept verbatim in ``TraceRow.extra``.

Session semantics (checked against Dynamo 1.6.1, the installed ``ai-dynamo``,
by replaying probe traces, and against the upstream source):

- A row without ``session_id`` is a session of its own. Rows sharing a
  ``session_id`` are its turns in file order.
- A later turn starts ``delay`` ms after the previous turn of its session
  *completes*: the explicit ``delay``, else its timestamp minus the timestamp
  of the latest earlier turn of the session that had one, else 0.
- Session start times are shifted so the earliest is 0 ms, then start times
  and delays are divided by ``speedup``. Sessions are ordered by
  (start, first line), which is how Dynamo's driver admits them.

Where this loader is stricter than Dynamo (all deliberate: each of these is a
malformed trace that Dynamo would replay in some silently surprising way):

- Unsorted first-turn timestamps are an error here; Dynamo sorts them.
- Negative timestamps are an error here; Dynamo normalises them away.
- ``output_length`` 0 is an error here; Dynamo replays it as a zero-token
  request.
- ``len(hash_ids) * trace_block_size < input_length`` is an error, as in
  Dynamo 1.6.1. Newer upstream ``trace.rs`` clamps ``input_length`` to that
  capacity instead; pass ``clamp_input_length=True`` for that behaviour.

Where it is more lenient: an integer ``session_id`` is accepted (Dynamo
rejects the row as bad JSON). Errors Dynamo also raises, and raised here with
the file, line and field: a non-zero delay on a first turn, a negative
timestamp delta between turns of a session, a later turn whose timestamp has
no earlier timestamp in its session to be measured from, ``input_length`` 0.

Why one module of about 400 lines (an eighth of them this docstring): the row
format, its checks and the session grouping are one contract with Dynamo's
loader, read and changed together.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

_U64_LIMIT = 1 << 64


class TraceError(ValueError):
    """A malformed trace; the message names the file, the 1-based line and the field."""

    def __init__(self, path: str, line: int | None, field_name: str | None, problem: str):
        self.path = path
        self.line = line
        self.field = field_name
        where = path if line is None else f"{path}, line {line}"
        what = problem if field_name is None else f"field '{field_name}': {problem}"
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request as written in the file (timestamps raw, not normalised)."""

    line: int
    timestamp_ms: float | None
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    session_id: str | None
    delay_ms: float | None
    priority: int | None
    extra: dict = field(default_factory=dict, hash=False)  # unknown keys, verbatim; treat as read-only


@dataclass(frozen=True, slots=True)
class Turn:
    """A request inside its session; ``delay_ms`` runs from the previous turn's completion."""

    row: TraceRow
    delay_ms: float  # 0 for the first turn; already divided by the speed-up


@dataclass(frozen=True, slots=True)
class Session:
    """A closed-loop chain of turns; the first arrives at ``start_ms`` (normalised, sped up)."""

    session_id: str
    start_ms: float
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class Trace:
    """A loaded trace: sessions ordered by (start_ms, first line)."""

    path: str
    trace_block_size: int
    speedup: float
    sessions: tuple[Session, ...]
    notes: tuple[str, ...] = ()      # what loading changed that a user should know (printed as warnings)

    @property
    def n_requests(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    @property
    def n_sessions(self) -> int:
        return len(self.sessions)

    @property
    def is_single_turn(self) -> bool:
        """True when every session has one turn, so arrivals are fully open-loop."""
        return all(len(s.turns) == 1 for s in self.sessions)

    def first_arrivals(self) -> list[float]:
        """Start time (ms) of each session, in session order: the open-loop arrival schedule."""
        return [s.start_ms for s in self.sessions]

    def resample(self, fraction: float, seed: int) -> "Trace":
        """A random subset of the sessions (without replacement, arrival times kept): repeats of a sweep
        point on resampled traces give its confidence interval over traffic, not only over seeds."""
        import random

        if not 0 < fraction <= 1:
            raise ValueError(f"resample fraction must be in (0, 1], got {fraction}")
        k = max(1, round(fraction * len(self.sessions)))
        keep = sorted(random.Random(seed).sample(range(len(self.sessions)), k))
        return Trace(self.path, self.trace_block_size, self.speedup, tuple(self.sessions[i] for i in keep),
                     self.notes)

    def rows(self) -> list[TraceRow]:
        """Every row in file order, e.g. to hash prompts up front."""
        return sorted((t.row for s in self.sessions for t in s.turns), key=lambda r: r.line)


# ---------------------------------------------------------------------------
# row parsing


def _pick(obj: dict, name: str, alias: str, path: str, line: int):
    """Pop a field that may be spelled two ways; both spellings at once is ambiguous."""
    if alias in obj:
        if name in obj:
            raise TraceError(path, line, name, f"given twice, as '{name}' and '{alias}'")
        return alias, obj.pop(alias)
    return name, obj.pop(name, None)


def _number(value, path: str, line: int, name: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise TraceError(path, line, name, f"must be a finite number, got {value!r}")
    if value < 0:
        raise TraceError(path, line, name, f"must be >= 0, got {value!r}")
    return float(value)


def _integer(value, path: str, line: int, name: str, minimum: int) -> int:
    if type(value) is not int:
        raise TraceError(path, line, name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise TraceError(path, line, name, f"must be >= {minimum}, got {value}")
    return value


def _hash_ids(value, path: str, line: int) -> tuple[int, ...]:
    if type(value) is not list:
        raise TraceError(path, line, "hash_ids", f"must be a list of integers, got {type(value).__name__}")
    if value and not (all(type(h) is int for h in value) and min(value) >= 0 and max(value) < _U64_LIMIT):
        i, bad = next((i, h) for i, h in enumerate(value) if type(h) is not int or not 0 <= h < _U64_LIMIT)
        raise TraceError(path, line, "hash_ids", f"element {i} must be an integer in [0, 2**64), got {bad!r}")
    return tuple(value)


def _parse_row(text: bytes, path: str, line: int, trace_block_size: int, clamp_input_length: bool) -> TraceRow:
    try:
        obj = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise TraceError(path, line, None, f"invalid JSON ({exc})") from None
    if type(obj) is not dict:
        raise TraceError(path, line, None, f"expected a JSON object, got {type(obj).__name__}")

    if "hash_ids" not in obj:
        raise TraceError(path, line, "hash_ids", "missing (required)")
    hash_ids = _hash_ids(obj.pop("hash_ids"), path, line)

    name, out = _pick(obj, "output_length", "output_tokens", path, line)
    if out is None:
        raise TraceError(path, line, "output_length", "missing (required; alias 'output_tokens')")
    output_length = _integer(out, path, line, name, 1)

    capacity = len(hash_ids) * trace_block_size
    name, isl = _pick(obj, "input_length", "input_tokens", path, line)
    if isl is None:
        input_length = capacity
    else:
        input_length = _integer(isl, path, line, name, 0)
        if input_length > capacity:
            if not clamp_input_length:
                raise TraceError(path, line, name, f"hash_ids too short for input_length: {len(hash_ids)} ids x "
                                 f"{trace_block_size} tokens = {capacity} < {input_length}")
            input_length = capacity
    if input_length == 0:
        raise TraceError(path, line, name, "input_length must be positive (is hash_ids empty?)")

    name, ts = _pick(obj, "timestamp", "created_time", path, line)
    timestamp_ms = None if ts is None else _number(ts, path, line, name)
    name, dl = _pick(obj, "delay", "delay_ms", path, line)
    delay_ms = None if dl is None else _number(dl, path, line, name)

    sid = obj.pop("session_id", None)
    if sid is not None and type(sid) is not str:
        if type(sid) is not int:
            raise TraceError(path, line, "session_id", f"must be a string or an integer, got {sid!r}")
        sid = str(sid)

    pr = obj.pop("priority", None)
    if pr is not None and type(pr) is not int:
        raise TraceError(path, line, "priority", f"must be an integer, got {pr!r}")

    return TraceRow(line, timestamp_ms, input_length, output_length, hash_ids, sid, delay_ms, pr, obj)


# ---------------------------------------------------------------------------
# ordering and session checks


@dataclass(slots=True)
class _SessionTracker:
    """Per-file state for the cross-row rules: first-turn order and turn delays."""

    path: str
    last_first_ts: float | None = None
    last_first_line: int = 0
    last_ts: dict[str, float | None] = field(default_factory=dict)  # session -> latest turn timestamp

    def turn_delay(self, row: TraceRow) -> float | None:
        """Unscaled delay of a later turn after its predecessor completes; None for a first turn."""
        sid = row.session_id
        if sid is None or sid not in self.last_ts:
            if row.delay_ms:
                raise TraceError(self.path, row.line, "delay",
                                 f"a first turn cannot have a delay (got {row.delay_ms:g} ms); "
                                 "its arrival is its timestamp")
            ts = row.timestamp_ms
            if ts is not None:
                if self.last_first_ts is not None and ts < self.last_first_ts:
                    raise TraceError(self.path, row.line, "timestamp",
                                     f"first-turn timestamps must be non-decreasing: {ts:g} ms < "
                                     f"{self.last_first_ts:g} ms on line {self.last_first_line}")
                self.last_first_ts, self.last_first_line = ts, row.line
            if sid is not None:
                self.last_ts[sid] = ts
            return None

        previous = self.last_ts[sid]
        ts = row.timestamp_ms
        if ts is not None:
            self.last_ts[sid] = ts
        if row.delay_ms is not None:
            return row.delay_ms
        if ts is None:
            return 0.0
        if previous is None:
            raise TraceError(self.path, row.line, "timestamp",
                             f"cannot derive the delay of a later turn of session {sid!r}: no earlier "
                             "turn of it has a timestamp (give 'delay' instead)")
        if ts < previous:
            raise TraceError(self.path, row.line, "timestamp",
                             f"earlier than the previous turn of session {sid!r} ({ts:g} < {previous:g} ms)")
        return ts - previous


def _iter_checked(path, trace_block_size: int, clamp_input_length: bool) -> Iterator[tuple[TraceRow, float | None]]:
    if type(trace_block_size) is not int or trace_block_size <= 0:
        raise ValueError(f"trace_block_size must be a positive integer, got {trace_block_size!r}")
    spath = os.fspath(path)
    tracker = _SessionTracker(spath)
    with open_trace(spath) as fh:
        for line_no, text in enumerate(_lines(fh, spath), 1):
            if text.isspace() or not text:
                continue
            row = _parse_row(text, spath, line_no, trace_block_size, clamp_input_length)
            yield row, tracker.turn_delay(row)


MAX_LINE_BYTES = 64 << 20        # far beyond any real request (hash_ids of a 1M-token prompt are ~20 MB)
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def open_trace(path: str):
    """The trace's bytes, decompressed when the file is gzip or zstd (told by its magic bytes, not its name)."""
    if os.path.isdir(path):
        raise TraceError(path, None, None, "is a directory, not a trace file")
    if not os.path.exists(path):
        raise TraceError(path, None, None, "not found")
    with open(path, "rb") as probe:
        magic = probe.read(4)
    if magic.startswith(_GZIP):
        import gzip

        return gzip.open(path, "rb")
    if magic == _ZSTD:
        import io

        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _lines(fh, path: str) -> Iterator[bytes]:
    """Lines of at most MAX_LINE_BYTES, so a file without newlines fails at once instead of being read whole."""
    line = 0
    while True:
        try:
            text = fh.readline(MAX_LINE_BYTES + 1)
        except Exception as exc:     # noqa: BLE001 - a damaged gzip/zstd stream raises its library's own errors
            raise TraceError(path, line + 1, None, f"cannot read or decompress: {exc}") from None
        if not text:
            return
        line += 1
        if len(text) > MAX_LINE_BYTES:
            raise TraceError(path, line, None, f"longer than {MAX_LINE_BYTES >> 20} MiB without a newline "
                                               "(a JSONL trace has one JSON object per line)")
        yield text


def iter_rows(path, trace_block_size: int = 512, *, clamp_input_length: bool = False) -> Iterator[TraceRow]:
    """Stream validated rows in file order; raises TraceError at the first bad line."""
    for row, _ in _iter_checked(path, trace_block_size, clamp_input_length):
        yield row


def load_trace(path, *, trace_block_size: int = 512, speedup: float = 1.0, limit: int | None = None,
               clamp_input_length: bool = False, require_timestamps: bool = True) -> Trace:
    """Load, validate and group a trace into sessions, as Dynamo's replay would.

    ``limit`` keeps the first ``limit`` requests (rows) of the file.
    ``require_timestamps=False`` accepts sessions whose first turn has no
    timestamp (for closed-loop concurrency replay, which ignores arrival
    times; Dynamo's trace mode rejects them); such sessions start at 0 ms.
    """
    if not (isinstance(speedup, (int, float)) and math.isfinite(speedup) and speedup > 0):
        raise ValueError(f"speedup must be a finite number > 0, got {speedup!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    spath = os.fspath(path)

    turns_of: dict[str, list[Turn]] = {}
    starts: list[tuple[float | None, list[Turn], str]] = []  # in order of first appearance
    n = 0
    for row, delay in _iter_checked(spath, trace_block_size, clamp_input_length):
        if delay is None:
            if row.timestamp_ms is None and require_timestamps:
                raise TraceError(spath, row.line, "timestamp",
                                 "missing on a first turn (needed for its arrival time; "
                                 "use require_timestamps=False for closed-loop replay)")
            turns = [Turn(row, 0.0)]
            sid = row.session_id if row.session_id is not None else f"request_{row.line}"
            if row.session_id is not None:
                turns_of[row.session_id] = turns
            starts.append((row.timestamp_ms, turns, sid))
        else:
            turns_of[row.session_id].append(Turn(row, delay / speedup))
        n += 1
        if limit is not None and n >= limit:
            break
    if n == 0:
        raise TraceError(spath, None, None, "no requests in trace")

    notes = _renumber_wide_ids(spath, starts)
    origin = min((ts for ts, _, _ in starts if ts is not None), default=0.0)
    sessions = [Session(sid, 0.0 if ts is None else (ts - origin) / speedup, tuple(turns))
                for ts, turns, sid in starts]
    sessions.sort(key=lambda s: (s.start_ms, s.turns[0].row.line))
    return Trace(spath, trace_block_size, float(speedup), tuple(sessions), notes)


def _renumber_wide_ids(path: str, starts: list[tuple[float | None, list[Turn], str]]) -> tuple[str, ...]:
    """Blocks hash as the token ``hash_id as u32``, so ids ≥ 2**32 would alias ids that share their low 32 bits
    (two different prefixes sharing cache). If any id is that wide, renumber all of them densely by first
    appearance, in place; distinct ids stay distinct and equal ids equal. Returns the note to show."""
    rows = sorted((t.row for _, turns, _ in starts for t in turns), key=lambda r: r.line)
    wide = next((r for r in rows if r.hash_ids and max(r.hash_ids) > 0xFFFFFFFF), None)
    if wide is None:
        return ()
    ids: dict[int, int] = {}
    for r in rows:
        for h in r.hash_ids:
            ids.setdefault(h, len(ids))
    if len(ids) > 0xFFFFFFFF:
        raise TraceError(path, None, "hash_ids", "more than 2**32 distinct ids: they cannot be told apart as u32 tokens")
    for _, turns, _ in starts:
        for k, t in enumerate(turns):
            turns[k] = Turn(replace(t.row, hash_ids=tuple(ids[h] for h in t.row.hash_ids)), t.delay_ms)
    return (f"hash_ids ≥ 2**32 (first on line {wide.line}): all {len(ids):,} distinct ids renumbered 0.."
            f"{len(ids) - 1:,} so none alias (Dynamo 1.6.1 keeps only their low 32 bits, which would merge "
            "distinct prefixes)",)
