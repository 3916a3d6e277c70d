"""vLLM KV-event listener: hash translation without ZMQ, then a real PUB -> bound SUB round trip into a Router.

Events are built the way vLLM 0.32 encodes them (maps with a ``type`` tag) and
the way older releases did (tagged arrays); block hashes are opaque (ints or
bytes), as vLLM's are.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import msgpack
import numpy as np
import pytest
import zmq

from dynosim.engines.live.kv_events import (HashTranslator, KvEventListener, KvEventListenerError, KvEventStats,
                                            decode_batch, free_tcp_port)
from dynosim.router.hashing import block_hashes_of_tokens
from dynosim.router.kv_event import REMOVED, STORED, KvEvent
from dynosim.router.router import Router

BS = 32
PROMPT = [int(t) for t in np.random.default_rng(7).integers(0, 2048, size=4 * BS + 5)]
FULL_SEQ = tuple(block_hashes_of_tokens(PROMPT, BS)[1])     # 4 full blocks


def vh(i: int) -> bytes:
    """A vLLM-style opaque block hash (sha256 bytes)."""
    return hashlib.sha256(i.to_bytes(8, "little")).digest()


def stored(hashes, parent, tokens, *, block_size=BS, medium="GPU", **extra) -> dict:
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
            "token_ids": tokens, "block_size": block_size, "lora_id": None, "lora_name": None,
            "medium": medium, "extra_keys": None, "group_idx": 0, "kv_cache_spec_kind": "full_attention", **extra}


def removed(hashes, *, medium="GPU") -> dict:
    return {"type": "BlockRemoved", "block_hashes": hashes, "medium": medium, "group_idx": 0}


def blocks(lo: int, hi: int) -> list[int]:
    return PROMPT[lo * BS:hi * BS]


# -- translator -------------------------------------------------------------------------
def test_first_blocks_chain_from_none_like_a_prompt():
    tr = HashTranslator(BS)
    out = tr.translate(stored([vh(0), vh(1)], None, blocks(0, 2)))
    assert out == [KvEvent(STORED, FULL_SEQ[:2], None)]
    assert out[0].block_hashes == tuple(block_hashes_of_tokens(blocks(0, 2), BS)[1])
    assert tr.held_blocks() == 2 and tr.stats.stored_blocks == 2 and tr.stats.events == 1


def test_continuation_from_a_known_parent_gives_the_full_prompt_chain():
    tr = HashTranslator(BS)
    first = tr.translate(stored([vh(0), vh(1)], None, blocks(0, 2)))[0]
    second = tr.translate(stored([vh(2), vh(3)], vh(1), blocks(2, 4)))[0]
    assert second.parent == first.block_hashes[-1]
    assert first.block_hashes + second.block_hashes == FULL_SEQ
    # int hashes work the same (vLLM's builtin hash mode)
    tr2 = HashTranslator(BS)
    tr2.translate(stored([10, 11, 12], None, blocks(0, 3)))
    assert tr2.translate(stored([13], 12, blocks(3, 4)))[0].block_hashes == FULL_SEQ[3:]


def test_removal_translates_drops_mappings_and_counts_unknown_hashes():
    tr = HashTranslator(BS)
    tr.translate(stored([vh(0), vh(1), vh(2)], None, blocks(0, 3)))
    assert tr.translate(removed([vh(2), vh(99)])) == [KvEvent(REMOVED, (FULL_SEQ[2],), None)]
    assert tr.held_blocks() == 2 and tr.seq_hash_of(vh(2)) is None
    assert tr.stats.removed_blocks == 1 and tr.stats.unknown_removed == 1
    assert tr.translate(removed([vh(2)])) == [] and tr.stats.unknown_removed == 2


def test_duplicate_copies_are_removed_from_the_router_only_with_the_last_one():
    tr = HashTranslator(BS)
    tr.translate(stored([vh(0)], None, blocks(0, 1)))
    assert tr.translate(stored([vh(0)], None, blocks(0, 1))) == [KvEvent(STORED, FULL_SEQ[:1], None)]
    assert tr.translate(removed([vh(0)])) == []
    assert tr.held_blocks() == 1
    assert tr.translate(removed([vh(0)])) == [KvEvent(REMOVED, FULL_SEQ[:1], None)]
    assert tr.held_blocks() == 0


def test_unknown_parent_is_counted_and_skipped_not_guessed():
    tr = HashTranslator(BS)
    assert tr.translate(stored([vh(2), vh(3)], vh(1), blocks(2, 4))) == []
    assert tr.stats.unknown_parent == 1 and tr.held_blocks() == 0 and tr.stats.stored_blocks == 0


@pytest.mark.parametrize("event, message", [
    (stored([vh(0), vh(1)], None, blocks(0, 1)), "32 token_ids for 2 blocks"),
    (stored([vh(0)], None, blocks(0, 1)[:-1]), "31 token_ids for 1 blocks"),
    (stored([vh(0)], None, PROMPT[:16], block_size=16), "block_size 16"),
    (stored([[1, 2]], None, blocks(0, 1)), "not an int or bytes"),
    (stored([vh(0)], None, "not tokens"), "token_ids is not a list"),
    (stored([vh(0)], None, [-1] * BS), "not u32 token ids"),
    ({"type": "BlockMoved", "block_hashes": []}, "unknown event type 'BlockMoved'"),
    ({"block_hashes": []}, "unknown event type None"),
    (["Nope", 1], "unknown event type 'Nope'"),
    (42, "neither a map nor a tagged array"),
    (removed(vh(0)), "block_hashes is not a list"),
])
def test_malformed_events_are_counted_and_change_nothing(event, message):
    tr = HashTranslator(BS)
    tr.translate(stored([vh(7)], None, blocks(0, 1)))
    assert tr.translate(event) == []
    assert tr.stats.malformed == 1 and message in tr.stats.errors[0], tr.stats.errors
    assert tr.held_blocks() == 1 and tr.stats.stored_blocks == 1


def test_error_messages_are_capped():
    tr = HashTranslator(BS)
    for _ in range(30):
        tr.translate(42)
    assert tr.stats.malformed == 30 and len(tr.stats.errors) == 10


def test_tagged_array_encoding_of_older_vllm():
    tr = HashTranslator(BS)
    # [tag, block_hashes, parent, token_ids, block_size, lora_id, medium], trailing defaults omitted
    a = tr.translate(["BlockStored", [1, 2], None, blocks(0, 2), BS, None, "GPU"])
    b = tr.translate(["BlockStored", [3], 2, blocks(2, 3), BS, None])         # no medium field at all
    assert a[0].block_hashes + b[0].block_hashes == FULL_SEQ[:3]
    assert tr.translate(["BlockRemoved", [3], "GPU"]) == [KvEvent(REMOVED, (FULL_SEQ[2],), None)]
    assert tr.translate(["BlockRemoved", [2], "CPU"]) == [] and tr.stats.ignored_medium == 1
    out = tr.translate(["AllBlocksCleared"])
    assert out == [KvEvent(REMOVED, FULL_SEQ[:2], None)] and tr.held_blocks() == 0
    assert tr.stats.malformed == 0


def test_all_blocks_cleared_removes_every_known_block():
    tr = HashTranslator(BS)
    tr.translate(stored([vh(0), vh(1)], None, blocks(0, 2)))
    tr.translate(stored([vh(2)], vh(1), blocks(2, 3)))
    (upd,) = tr.translate({"type": "AllBlocksCleared"})
    assert upd.kind == "removed" and sorted(upd.block_hashes) == sorted(FULL_SEQ[:3])
    assert tr.held_blocks() == 0 and tr.stats.cleared == 1
    assert tr.translate({"type": "AllBlocksCleared"}) == []              # nothing left to remove
    assert tr.translate(stored([vh(3)], vh(2), blocks(3, 4))) == []       # mapping gone: parent unknown
    assert tr.stats.unknown_parent == 1


def test_other_media_lora_and_secondary_groups_are_counted_and_ignored():
    tr = HashTranslator(BS)
    assert tr.translate(stored([vh(0)], None, blocks(0, 1), medium="CPU")) == []
    assert tr.translate(stored([vh(0)], None, blocks(0, 1), lora_id=3, lora_name="ad")) == []
    assert tr.translate(stored([vh(0)], None, blocks(0, 1), group_idx=1)) == []
    assert (tr.stats.ignored_medium, tr.stats.ignored_lora, tr.stats.ignored_group) == (1, 1, 1)
    assert tr.held_blocks() == 0
    assert tr.translate(stored([vh(0)], None, blocks(0, 1), medium=None))[0].block_hashes == FULL_SEQ[:1]
    assert tr.translate(removed([vh(0)], medium="CPU")) == [] and tr.held_blocks() == 1


def test_block_size_is_validated():
    with pytest.raises(ValueError, match="block_size"):
        HashTranslator(0)


# -- batches (no ZMQ) -------------------------------------------------------------------------
def frames(seq: int, events: list, *, ts: float = 1.5, dp_rank: int | None = 0) -> list[bytes]:
    return [b"", seq.to_bytes(8, "big"), msgpack.packb([ts, events, dp_rank])]


def test_feed_counts_batches_gaps_resets_and_malformed_frames():
    got = []
    lis = KvEventListener("tcp://127.0.0.1:1", 3, BS, lambda *a: got.append(a))
    lis.feed(frames(5, [stored([vh(0)], None, blocks(0, 1))]))
    lis.feed([b"", (6).to_bytes(8, "big"), msgpack.packb({"ts": 2.0, "events": [], "data_parallel_rank": 0})])
    lis.feed(frames(9, [], dp_rank=None))
    lis.feed(frames(2, []))
    lis.feed([b"", b"\x00" * 8])                       # two frames
    lis.feed([b"", b"\x01", msgpack.packb([1.0, []])])  # short sequence number
    lis.feed([b"", (10).to_bytes(8, "big"), b"\xc1"])  # not msgpack
    lis.feed([b"", (11).to_bytes(8, "big"), msgpack.packb("hello")])
    s = lis.stats
    assert got == [(3, KvEvent(STORED, FULL_SEQ[:1], None))]
    assert (s.batches, s.first_seq, s.last_seq, s.seq_gaps, s.seq_resets, s.malformed) == (4, 5, 2, 2, 1, 4)
    assert s.events == 1 and s.first_event_wall_ms is not None and len(s.errors) == 4


def test_a_failing_callback_is_counted_not_fatal():
    def boom(*_):
        raise IndexError("no such worker")
    lis = KvEventListener("tcp://127.0.0.1:1", 0, BS, boom)
    lis.feed(frames(0, [stored([vh(0)], None, blocks(0, 1)), stored([vh(1)], vh(0), blocks(1, 2))]))
    assert lis.stats.callback_errors == 2 and "IndexError: no such worker" in lis.stats.errors[0]
    assert lis.held_blocks() == 2


def test_decode_batch_rejects_non_batches():
    assert decode_batch(msgpack.packb([1.0, [], None])) == (1.0, [])
    with pytest.raises(ValueError, match="events is not a list"):
        decode_batch(msgpack.packb([1.0, 3]))


# -- over ZMQ ---------------------------------------------------------------------------------
async def _until(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for KV events"
        await asyncio.sleep(0.005)


def test_pub_connecting_to_the_bound_listener_feeds_a_router():
    async def scenario():
        router = Router("kv", 2, BS)
        ctx = zmq.Context()
        try:
            async with KvEventListener("tcp://127.0.0.1:*", worker=1, block_size=BS,
                                       on_event=router.on_kv_event) as lis:
                assert lis.running and lis.bound_endpoint.startswith("tcp://127.0.0.1:")
                pub = ctx.socket(zmq.PUB)
                pub.setsockopt(zmq.LINGER, 0)
                pub.connect(lis.bound_endpoint)          # vLLM connects for tcp://127.0.0.1:PORT
                seq = 0

                def send(events):
                    nonlocal seq
                    pub.send_multipart(frames(seq, events, ts=time.time()))
                    seq += 1

                # slow joiner: PUB drops everything until the subscription arrives; probe until one lands
                deadline = time.monotonic() + 5.0
                while lis.stats.batches == 0:
                    assert time.monotonic() < deadline, "no probe batch arrived"
                    send([])
                    await asyncio.sleep(0.01)
                send([stored([vh(0), vh(1)], None, blocks(0, 2))])
                seq += 1                                  # a lost batch
                send([stored([vh(2), vh(3)], vh(1), blocks(2, 4)),
                      stored([vh(50)], None, blocks(0, 1), medium="CPU")])
                await _until(lambda: lis.stats.last_seq == seq - 1)
                assert router.indexer.depths(FULL_SEQ) == [0, 4]
                assert lis.stats.seq_gaps == 1 and lis.stats.stored_blocks == 4
                assert lis.stats.ignored_medium == 1 and lis.held_blocks() == 4
                send([removed([vh(3)])])
                await _until(lambda: lis.stats.last_seq == seq - 1)
                assert router.indexer.depths(FULL_SEQ) == [0, 3]
                assert lis.stats.malformed == 0 and lis.stats.errors == []
                pub.close(linger=0)
            assert not lis.running
            await lis.stop()                              # idempotent
        finally:
            ctx.term()

    asyncio.run(scenario())


def test_bind_failure_names_the_endpoint():
    async def scenario():
        port = free_tcp_port()
        ep = f"tcp://127.0.0.1:{port}"
        async with KvEventListener(ep, 0, BS, lambda *a: None) as first:
            second = KvEventListener(ep, 1, BS, lambda *a: None)
            with pytest.raises(KvEventListenerError, match=f"127.0.0.1:{port}"):
                await second.start()
            with pytest.raises(KvEventListenerError, match="already started"):
                await first.start()
            await second.stop()
        with pytest.raises(KvEventListenerError, match="nonsense"):
            await KvEventListener("nonsense", 0, BS, lambda *a: None).start()

    asyncio.run(scenario())


def test_stats_defaults():
    s = KvEventStats()
    assert s.batches == 0 and s.last_seq is None and s.errors == []


def test_wait_connected_sees_the_publisher_so_its_first_batch_is_not_lost():
    """The slow joiner: a PUB drops what it sends before our subscription reached it. After
    ``wait_connected`` the engine's very first batch (seq 0) arrives, every time."""
    async def scenario():
        ctx = zmq.Context()
        try:
            for trial in range(3):
                got = []
                async with KvEventListener("tcp://127.0.0.1:*", 0, BS, lambda *a: got.append(a)) as lis:
                    assert lis.peers == 0 and not await lis.wait_connected(timeout_s=0.1)
                    pub = ctx.socket(zmq.PUB)
                    pub.setsockopt(zmq.LINGER, 0)
                    pub.connect(lis.bound_endpoint)
                    assert await lis.wait_connected(timeout_s=5.0), trial
                    assert lis.peers == 1
                    pub.send_multipart(frames(0, [stored([vh(0), vh(1)], None, blocks(0, 2))], ts=time.time()))
                    await _until(lambda: lis.stats.batches == 1)
                    assert lis.stats.first_seq == 0 and lis.stats.stored_blocks == 2 and len(got) == 1
                    pub.close(linger=0)
                    await _until(lambda: lis.peers == 0)   # the disconnect is seen too
        finally:
            ctx.term()

    asyncio.run(scenario())
