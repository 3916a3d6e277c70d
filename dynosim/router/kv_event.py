"""The one KV-cache event type: what an engine tells a router's indexer about its prefix cache.

Owns ``KvEvent`` and ``KvEventKind``. Every producer emits it and every consumer takes it: the
mocker's ``KvCache`` (through its sink and the simulated worker's buffer), the live listener
(``engines.live.kv_events``, translating vLLM's ZMQ events into dynosim sequence hashes), and
``Router.on_kv_event(worker, event)`` → ``KvIndexer.apply(worker, event)``.

It lives in ``router/`` because the router consumes it and may import no engine code; engines
import it from here. Imports nothing but the standard library.

``KvEvent`` is a ``NamedTuple``: immutable, no per-instance dict, and cheap to build and unpack on
the hot path of a ``--router-mode kv`` run (one event per stored or evicted run of blocks).
``KvEventKind`` is a ``StrEnum``, so a kind compares equal to its plain value (``"stored"``).
"""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from typing import NamedTuple


class KvEventKind(StrEnum):
    STORED = "stored"    # full blocks became resident (cached), chained after ``parent``
    REMOVED = "removed"  # blocks left the cache (evicted; live: the last copy removed, or all cleared)


class KvEvent(NamedTuple):
    """One change to what an engine's prefix cache holds, in dynosim sequence hashes.

    ``block_hashes``: the blocks, in sequence order. ``parent``: for ``STORED``, the sequence hash of
    the block before the first one (``None`` at the start of a sequence); always ``None`` for
    ``REMOVED``. A live engine's "all blocks cleared" arrives as one ``REMOVED`` of every block it held.
    """

    kind: KvEventKind
    block_hashes: tuple[int, ...]
    parent: int | None = None


STORED = KvEventKind.STORED
REMOVED = KvEventKind.REMOVED

# ``event_of((kind, block_hashes, parent))``: the same KvEvent without the Python-level ``__new__``
# a NamedTuple call goes through (the mocker's KvCache builds one per stored or evicted run of blocks).
event_of = partial(tuple.__new__, KvEvent)


def stored(block_hashes, parent: int | None = None) -> KvEvent:
    """A ``STORED`` event of ``block_hashes`` (any iterable) after ``parent``."""
    return KvEvent(STORED, tuple(block_hashes), parent)


def removed(block_hashes) -> KvEvent:
    """A ``REMOVED`` event of ``block_hashes`` (any iterable)."""
    return KvEvent(REMOVED, tuple(block_hashes), None)
