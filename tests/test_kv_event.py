"""One KvEvent type on every path: mocker KvCache → worker → router indexer, and live listener → router."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from conftest import drive, make_request
from dynosim.engines.live.kv_events import HashTranslator, KvEventListener
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.kv_cache import KvCache
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.router.hashing import block_hashes_of_tokens
from dynosim.router.kv_event import REMOVED, STORED, KvEvent, KvEventKind, event_of, removed, stored
from dynosim.router.router import Router


def test_kv_event_is_frozen_and_compares_with_plain_kinds():
    ev = stored([1, 2], 7)
    assert ev == KvEvent(KvEventKind.STORED, (1, 2), 7) and ev.kind == "stored" and ev.kind is STORED
    assert removed([3]) == KvEvent(REMOVED, (3,), None)
    with pytest.raises(AttributeError):
        ev.parent = 3  # type: ignore[misc]
    assert not hasattr(ev, "__dict__")
    kind, hashes, parent = ev
    assert (kind, hashes, parent) == ("stored", (1, 2), 7)
    fast = event_of((STORED, (1, 2), 7))  # the KvCache's hot-path constructor builds the same thing
    assert type(fast) is KvEvent and fast == ev and fast.parent == 7


def test_mocker_events_feed_the_router_indexer():
    router = Router("kv", 2, 16)
    seen: list = []

    def sink(event):
        seen.append(event)
        router.on_kv_event(1, event)

    s = VllmScheduler(MockerArgs(block_size=16, num_gpu_blocks=8), sink=sink)
    a = make_request(0, 64, 2, 16, tag=1)
    b = make_request(1, 96, 2, 16, tag=2)   # 6 blocks: evicts some of A's cached blocks
    drive(s, [(0.0, a), (100.0, b)])
    assert seen and all(type(e) is KvEvent and type(e.block_hashes) is tuple for e in seen)
    assert {e.kind for e in seen} == {STORED, REMOVED}
    resident = set(s.kv.active) | set(s.kv.inactive)
    assert router.indexer.depths(b.seq_hashes) == [0, sum(h in resident for h in b.seq_hashes)]
    assert router.indexer.tree_sizes == [0, len(resident)]


def test_live_listener_emits_the_same_type_the_router_takes():
    bs = 16
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 1000, size=2 * bs)]
    seq = tuple(block_hashes_of_tokens(tokens, bs)[1])
    tr = HashTranslator(bs)
    out = tr.translate({"type": "BlockStored", "block_hashes": [11, 12], "parent_block_hash": None,
                        "token_ids": tokens, "block_size": bs, "medium": "GPU"})
    assert out == [KvEvent(STORED, seq, None)] and type(out[0]) is KvEvent

    router = Router("kv", 2, bs)
    lis = KvEventListener("tcp://127.0.0.1:1", 0, bs, router.on_kv_event)
    batch = msgpack.packb([1.0, [["BlockStored", [21, 22], None, tokens, bs, None, "GPU"]]])
    lis.feed([b"", (0).to_bytes(8, "big"), batch])
    assert router.indexer.depths(list(seq)) == [2, 0]
    lis.feed([b"", (1).to_bytes(8, "big"), msgpack.packb([2.0, [["AllBlocksCleared"]]])])
    assert router.indexer.depths(list(seq)) == [0, 0] and lis.stats.callback_errors == 0


def test_the_same_events_from_either_world_give_the_same_index():
    """A mocker KvCache and a live translator storing the same blocks leave identical router indexes."""
    bs = 16
    tokens = [int(t) for t in np.random.default_rng(5).integers(0, 1000, size=3 * bs)]
    seq = block_hashes_of_tokens(tokens, bs)[1]
    sim_router, live_router = Router("kv", 1, bs), Router("kv", 1, bs)
    kv = KvCache(8, bs, lambda e: sim_router.on_kv_event(0, e))
    kv.acquire(seq, None)
    for e in HashTranslator(bs).translate({"type": "BlockStored", "block_hashes": [1, 2, 3],
                                           "parent_block_hash": None, "token_ids": tokens, "block_size": bs}):
        live_router.on_kv_event(0, e)
    assert sim_router.indexer.depths(seq) == live_router.indexer.depths(seq) == [3]
    assert not dataclasses.is_dataclass(KvEvent)
