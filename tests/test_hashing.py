"""Block hashing must be bit-identical to Dynamo's.

Reference values were produced once with Dynamo 1.6.1 (``ai-dynamo`` installed in
/work/dynvenv), i.e. by Dynamo's compiled Rust xxh3, not by the Python ``xxhash``
package this module uses:

- local hashes: ``dynamo.llm.compute_block_hash_for_seq(tokens, block_size)``;
- sequence hashes: Dynamo chains ``xxh3_64(LE u64 parent ‖ LE u64 local, 1337)``
  (``lib/tokens`` ``compute_next_sequence_hash``); the same binding hashed those
  16 bytes by being given them as four u32 "tokens" with block size 4;
- tokens of a trace row: ``hash_id & 0xFFFFFFFF`` repeated 512 times, cut at
  ``input_length`` (``trace.rs`` ``synthesize_tokens``);
- digests: sha256 over the concatenated little-endian u64 sequence hashes of every
  row of examples/traces/conversation_1k.jsonl (first ``limit`` rows).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from dynosim.router.hashing import (
    BlockHasher,
    block_hashes_of_tokens,
    expand_tokens,
    local_block_hash,
    next_sequence_hash,
    sequence_hashes,
)
from dynosim.traces import iter_rows

EXAMPLE_1K = Path(__file__).resolve().parents[1] / "examples" / "traces" / "conversation_1k.jsonl"

ZEROS_64_LOCAL = 15480293642169978529

# hash_ids [0, 1, 2], input_length 1100, trace block 512, engine block 64: 17 full blocks.
CONV012_LOCAL = [15480293642169978529] * 8 + [16951273711404654616] * 8 + [2439962053643786207]
CONV012_SEQ = [
    15480293642169978529, 5944459121700626535, 16099866019740108238, 8303852917356589601,
    16990872919438111566, 10497373499677856093, 7158907481835388241, 2571628799858046668,
    9374962515969034412, 3531550582664291546, 16464487496292161273, 320971388973824664,
    11555155460267815254, 2591392125821974034, 7861299176547211326, 5096796917587920036,
    13795458250333781931,
]

# tokens [(i * 2654435761) % 2**32 for i in range(70)], block size 16: 4 full blocks, 6 tokens left over.
ARB_TOKENS = [(i * 2654435761) % 2**32 for i in range(70)]
ARB_B16_LOCAL = [13634175306590384458, 2639317909852986595, 4314687847324454193, 4242089292101186374]
ARB_B16_SEQ = [13634175306590384458, 6176069972745049476, 410552615502084272, 6614389341035343792]

# hash_ids [2**32 + 5, 7, 2**40 + 7], input_length 1400, block size 100 (does not divide 512):
# ids are cast to u32, so the first is token 5 and the other two are both token 7.
BIG_IDS_B100_SEQ_HEAD = [2508710816938443297, 18226293583097842255, 12119243420068032909]
BIG_IDS_B100_LOCAL_5_6 = [12618148784362620421, 12537391098473763346]

# hash_ids [3, 9], input_length 1000, block size 48: 20 full blocks.
B48_SEQ_TAIL = [13837178402603189838, 2878679679775877114]

# Whole-file digests (block size, rows, number of sequence hashes, sha256).
DIGESTS = [
    (64, 1000, 214101, "6091576b4bfe2ec15b8de4240e65da2b3be7d059a860626ed369cebd9a47efc0"),
    (48, 300, 88816, "e26fd0b202bddb61b380d18ad7aa1950424fa6e7c4a19eda96cfa7b33a302d74"),
    (16, 200, 173790, "34c42e68ad32215c39145ebc908614c84ffef9721e412a6137cc24823c76f404"),
]


def naive_hashes(hash_ids, input_length, trace_block_size, block_size):
    """Straight from the definition, sharing no code with the module under test."""
    tokens = []
    for h in hash_ids:
        tokens += [h & 0xFFFFFFFF] * trace_block_size
    tokens = tokens[:input_length]
    local = [xxhash.xxh3_64_intdigest(struct.pack(f"<{block_size}I", *tokens[i:i + block_size]), seed=1337)
             for i in range(0, len(tokens) - block_size + 1, block_size)]
    seq = []
    for h in local:
        seq.append(h if not seq else xxhash.xxh3_64_intdigest(struct.pack("<QQ", seq[-1], h), seed=1337))
    return local, seq


def test_local_block_hash_reference():
    assert local_block_hash([0] * 64) == ZEROS_64_LOCAL
    assert local_block_hash(np.zeros(64, dtype=np.uint32)) == ZEROS_64_LOCAL
    assert [local_block_hash(ARB_TOKENS[i:i + 16]) for i in range(0, 64, 16)] == ARB_B16_LOCAL


def test_sequence_hashes_reference():
    assert sequence_hashes(ARB_B16_LOCAL) == ARB_B16_SEQ
    assert sequence_hashes(CONV012_LOCAL) == CONV012_SEQ
    assert sequence_hashes([]) == []
    assert next_sequence_hash(CONV012_SEQ[0], CONV012_LOCAL[1]) == CONV012_SEQ[1]


def test_arbitrary_tokens_reference():
    assert block_hashes_of_tokens(ARB_TOKENS, 16) == (ARB_B16_LOCAL, ARB_B16_SEQ)


@pytest.mark.parametrize("block_size", [64, 16, 512, 1])
def test_block_hasher_fast_path_reference(block_size):
    hasher = BlockHasher(block_size, 512)
    assert hasher.aligned
    local, seq = hasher.hashes([0, 1, 2], 1100)
    assert len(seq) == len(local) == 1100 // block_size
    if block_size == 64:
        assert (local, seq) == (CONV012_LOCAL, CONV012_SEQ)
    assert (local, seq) == naive_hashes([0, 1, 2], 1100, 512, block_size)


def test_block_hasher_generic_path_reference():
    local, seq = BlockHasher(100, 512).hashes([2**32 + 5, 7, 2**40 + 7], 1400)
    assert len(seq) == 14 and seq[:3] == BIG_IDS_B100_SEQ_HEAD and local[5:7] == BIG_IDS_B100_LOCAL_5_6
    local, seq = BlockHasher(48, 512).hashes([3, 9], 1000)
    assert len(seq) == 20 and seq[-2:] == B48_SEQ_TAIL


def test_ids_cast_to_u32():
    hasher = BlockHasher(64, 512)
    assert hasher.hashes([2**32 + 1, 2**63], 600) == hasher.hashes([1, 0], 600)
    np.testing.assert_array_equal(expand_tokens([2**64 - 1, 3], 515, 512), [2**32 - 1] * 512 + [3] * 3)


def test_expand_tokens():
    toks = expand_tokens([5, 6, 7], 1030, 512)
    assert toks.dtype == np.uint32 and len(toks) == 1030
    assert (toks[:512] == 5).all() and (toks[512:1024] == 6).all() and (toks[1024:] == 7).all()
    with pytest.raises(ValueError, match="hash_ids too short"):
        expand_tokens([1], 513, 512)


def test_short_hash_ids_rejected_on_both_paths():
    for block_size in (64, 48):
        with pytest.raises(ValueError, match="hash_ids too short"):
            BlockHasher(block_size, 512).hashes([1, 2], 1025)


def test_partial_tail_not_hashed_and_short_prompt_has_no_blocks():
    hasher = BlockHasher(64, 512)
    assert hasher.hashes([1], 63) == ([], [])
    assert len(hasher.sequence_hashes([1, 2], 575)) == 8  # 575 // 64


def test_bad_sizes():
    for args in ((0, 512), (64, 0), (-1, 512)):
        with pytest.raises(ValueError):
            BlockHasher(*args)


def test_memo_shared_between_requests_gives_same_answers():
    hasher = BlockHasher(64, 512)
    first = hasher.hashes([0, 1, 2, 3], 2048)
    size = hasher.memo_size
    again = hasher.hashes([0, 1, 2, 3], 2048)
    branch = hasher.hashes([0, 1, 9], 1536)
    assert first == again and hasher.memo_size == size + 1  # only (prefix 0,1 ; id 9) is new
    assert branch[1][:16] == first[1][:16] and branch[1][16] != first[1][16]
    assert branch == naive_hashes([0, 1, 9], 1536, 512, 64)
    hasher.clear()
    assert hasher.memo_size == 0 and hasher.hashes([0, 1, 2, 3], 2048) == first


@pytest.mark.parametrize("block_size, limit, n_hashes, digest", DIGESTS)
def test_whole_trace_digest_matches_dynamo(block_size, limit, n_hashes, digest):
    hasher = BlockHasher(block_size, 512)
    h, n = hashlib.sha256(), 0
    for i, r in enumerate(iter_rows(EXAMPLE_1K)):
        if i >= limit:
            break
        seq = hasher.sequence_hashes(r.hash_ids, r.input_length)
        n += len(seq)
        h.update(struct.pack(f"<{len(seq)}Q", *seq))
    assert (n, h.hexdigest()) == (n_hashes, digest)


# Rows drawn from a small id pool so that prefixes are shared and the memo is exercised.
_rows = st.lists(
    st.tuples(st.lists(st.sampled_from([0, 1, 2, 3, 2**32 + 1, 2**64 - 1]), min_size=1, max_size=4),
              st.integers(min_value=0, max_value=10**6)),
    min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(rows=_rows,
       block_size=st.sampled_from([1, 3, 4, 7, 16, 48, 64, 100]),
       trace_block_size=st.sampled_from([4, 8, 16, 64, 100, 512]))
def test_block_hasher_matches_naive(rows, block_size, trace_block_size):
    hasher = BlockHasher(block_size, trace_block_size)
    for ids, length_seed in rows:
        input_length = 1 + length_seed % (len(ids) * trace_block_size)
        expected = naive_hashes(ids, input_length, trace_block_size, block_size)
        assert hasher.hashes(ids, input_length) == expected
        assert hasher.sequence_hashes(ids, input_length) == expected[1]
        tokens = expand_tokens(ids, input_length, trace_block_size)
        assert block_hashes_of_tokens(tokens, block_size) == expected
