"""KvBlockManager: block tables on the KvCache pool: allocation, free, the prefix-hit cap, ownership."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import make_request
from dynosim.engines.mocker.block_manager import _OUTPUT_BLOCK_TAG, KvBlockManager
from dynosim.engines.mocker.kv_cache import KvCache

BS = 16
PKG = Path(__file__).resolve().parents[1] / "dynosim"


def manager(blocks: int = 16, prefix_caching: bool = True, nextn: int = 0, sink=None) -> KvBlockManager:
    return KvBlockManager(KvCache(blocks, BS, sink), BS, prefix_caching, nextn)


def test_allocation_takes_full_prompt_blocks_then_a_private_partial():
    m = manager()
    r = make_request(0, 40, 5, BS)            # 2 full prompt blocks + 8 tokens
    assert m.allocate_slots(r, 40)
    assert r.blocks == r.seq_hashes[:2] and r.partial
    assert m.kv.num_active == 3 and m.kv.n_partial == 1 and m.slots(r) == 48
    assert m.allocate_slots(r, 45)            # room left in the partial block: nothing changes
    assert m.kv.num_active == 3
    r.computed = 48
    assert m.allocate_slots(r, 49)            # the partial block filled: it becomes a full, private block
    assert r.blocks[:2] == r.seq_hashes[:2] and r.blocks[2] == m.block_hash(r, 2) and r.partial
    assert r.blocks[2] & _OUTPUT_BLOCK_TAG    # an output block never matches a prompt
    assert m.kv.num_active == 4


def test_block_identity_without_prefix_caching_is_always_private():
    m = manager(prefix_caching=False)
    r = make_request(0, 64, 2, BS)
    assert m.allocate_slots(r, 64)
    assert all(h & _OUTPUT_BLOCK_TAG for h in r.blocks) and len(r.blocks) == 4
    assert m.get_computed_blocks(r) == (0, 0)


def test_allocation_failure_keeps_what_it_got_and_free_returns_everything_tail_first():
    m = manager(blocks=3)
    r = make_request(0, 64, 2, BS)            # needs 4 blocks, the pool has 3
    assert not m.allocate_slots(r, 64)
    assert r.blocks == r.seq_hashes[:3] and not r.partial and m.kv.free_slots() == 0
    m.free(r)
    assert r.blocks == [] and not r.partial
    assert m.kv.active == {} and list(m.kv.inactive) == r.seq_hashes[:3][::-1]  # the tail is evicted first


def test_free_releases_a_partial_block():
    m = manager()
    r = make_request(0, 20, 3, BS)
    assert m.allocate_slots(r, 20) and r.partial
    m.free(r)
    assert m.kv.n_partial == 0 and m.kv.num_active == 0 and r.blocks == [] and not r.partial


def test_prefix_hit_is_capped_below_the_whole_sequence():
    m = manager()
    a = make_request(0, 64, 3, BS, tag=7)
    assert m.allocate_slots(a, 64)
    m.free(a)                                 # 4 prompt blocks cached, none active
    b = make_request(1, 64, 3, BS, tag=7)     # the same prompt
    # all 4 blocks are cached, but the last token must be computed: 3 blocks (48 tokens) are reused
    assert m.get_computed_blocks(b) == (48, 0)
    c = make_request(2, 70, 3, BS, tag=7)     # a longer prompt: the whole cached prefix is usable
    assert m.get_computed_blocks(c) == (64, 0)
    done = make_request(3, 64, 1, BS, tag=7)
    done.generated = 1                        # no output left (a finished sequence): no cap
    assert m.get_computed_blocks(done) == (64, 0)


def test_prefix_hit_gives_up_its_last_block_with_speculative_decoding():
    m = manager(nextn=2)
    a = make_request(0, 70, 3, BS, tag=7)
    assert m.allocate_slots(a, 70)            # a is active: its blocks count as active hits
    b = make_request(1, 70, 3, BS, tag=7)
    assert m.get_computed_blocks(b) == (48, 3)  # 4 matched, the last is recomputed for verification


def test_lookahead_reserves_room_for_drafts_only_when_the_sequence_completes():
    m = manager(nextn=2)
    r = make_request(0, 32, 10, BS)
    assert m.lookahead(r, 16) == 0            # a prompt chunk: no drafts yet
    assert m.lookahead(r, 32) == 2
    assert m.allocate_slots(r, 32)            # 32 tokens + 2 drafts: 2 full blocks and a partial one
    assert len(r.blocks) == 2 and r.partial
    r.generated = 9
    assert m.lookahead(r, 41) == 0            # the last output token: nothing left to draft


def test_seal_filled_partial_promotes_like_allocation():
    m, ref = manager(), manager()
    for mgr in (m, ref):
        r = make_request(0, 40, 20, BS)
        assert mgr.allocate_slots(r, 40)
        r.computed = 48
        if mgr is m:
            mgr.seal_filled_partial(r)        # fast-forward: the partial filled exactly
            assert not r.partial
        else:
            assert mgr.allocate_slots(r, 48)  # stepping would promote it when asked for 48
        assert len(r.blocks) == 3
    assert m.kv.active == ref.kv.active


def _writes_block_table(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and t.attr in ("blocks", "partial"):
                return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("append", "extend", "pop", "clear") and \
                isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "blocks":
            return True
    return False


def test_the_block_manager_is_the_only_writer_of_block_tables():
    """``req.blocks`` / ``req.partial`` stay on the Request for speed; only the block manager writes them
    (the Request sets their initial values)."""
    writers = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py") if _writes_block_table(ast.parse(p.read_text()))}
    assert writers == {"engines/mocker/block_manager.py", "request.py"}
