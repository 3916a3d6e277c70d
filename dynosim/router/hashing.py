"""KV block hashing, bit-identical to Dynamo's router and mocker.

Dynamo (``lib/kv-router/src/protocols.rs``, ``lib/tokens``) hashes only full
blocks of ``block_size`` tokens:

- local hash ``= xxh3_64(little-endian u32 tokens of the block, seed=1337)``;
- sequence hash ``seq[0] = local[0]``,
  ``seq[i] = xxh3_64(LE u64 seq[i-1] ‖ LE u64 local[i], seed=1337)``.

Replayed traces have no tokens, only ``hash_ids``; Dynamo's loader
(``lib/mocker/src/loadgen/trace.rs`` ``synthesize_tokens``) turns each id into
``trace_block_size`` copies of the token ``hash_id as u32`` (Rust ``as``:
the low 32 bits), truncated to ``input_length``, then re-chunks at the engine
block size. Matching this exactly lets our routing decisions be compared with
Dynamo's one for one.

The reference values in ``tests/test_hashing.py`` come from Dynamo's own
compiled hasher, not from this module.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import xxhash

XXH3_SEED = 1337
_U32_MASK = 0xFFFFFFFF
_xxh3 = xxhash.xxh3_64_intdigest
_pack_u64_pair = struct.Struct("<QQ").pack


def local_block_hash(tokens) -> int:
    """xxh3-64 (seed 1337) of one block's tokens as little-endian u32."""
    return _xxh3(np.asarray(tokens, dtype="<u4").tobytes(), XXH3_SEED)


def next_sequence_hash(parent: int, local: int) -> int:
    """Chain one block onto its parent's sequence hash."""
    return _xxh3(_pack_u64_pair(parent, local), XXH3_SEED)


def sequence_hashes(local_hashes: Sequence[int]) -> list[int]:
    """Rolling sequence hashes: position-aware identities of each block's whole prefix."""
    out: list[int] = []
    if not local_hashes:
        return out
    prev = local_hashes[0]
    out.append(prev)
    for local in local_hashes[1:]:
        prev = _xxh3(_pack_u64_pair(prev, local), XXH3_SEED)
        out.append(prev)
    return out


def expand_tokens(hash_ids: Sequence[int], input_length: int, trace_block_size: int) -> np.ndarray:
    """The synthetic prompt Dynamo builds from a trace row: each id repeated, cut at input_length."""
    if len(hash_ids) * trace_block_size < input_length:
        raise ValueError(f"hash_ids too short for input_length: {len(hash_ids)} x {trace_block_size} "
                         f"< {input_length}")
    ids = np.fromiter((h & _U32_MASK for h in hash_ids), dtype=np.uint32, count=len(hash_ids))
    return np.repeat(ids, trace_block_size)[:input_length]


def block_hashes_of_tokens(tokens, block_size: int) -> tuple[list[int], list[int]]:
    """(local, sequence) hashes of the full blocks of an arbitrary token sequence."""
    buf = np.ascontiguousarray(tokens, dtype="<u4").tobytes()
    step = 4 * block_size
    n_full = len(buf) // step
    local = [_xxh3(buf[i * step:(i + 1) * step], XXH3_SEED) for i in range(n_full)]
    return local, sequence_hashes(local)


@dataclass(slots=True)
class BlockHasher:
    """Hashes trace rows into engine blocks, memoising the work shared between requests.

    When ``trace_block_size`` is a multiple of ``block_size`` every engine block
    lies inside one trace block, so its local hash depends only on the token
    (cached per token) and the ``trace_block_size // block_size`` sequence
    hashes of a trace block depend only on (parent sequence hash, token)
    (memoised per instance). Shared prefixes are then hashed once per trace,
    not once per request. Other block sizes take the generic path over the
    expanded tokens; both give identical results.

    The memo grows with the number of distinct (prefix, block) pairs seen
    (about 183k for the Mooncake conversation trace); ``clear()`` drops it.
    """

    block_size: int
    trace_block_size: int = 512
    _local_of_token: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _chain_memo: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("block_size", "trace_block_size"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def aligned(self) -> bool:
        """True when engine blocks tile trace blocks exactly (the fast path)."""
        return self.trace_block_size % self.block_size == 0

    @property
    def memo_size(self) -> int:
        return len(self._chain_memo)

    def clear(self) -> None:
        self._local_of_token.clear()
        self._chain_memo.clear()

    def num_full_blocks(self, input_length: int) -> int:
        return input_length // self.block_size

    def hashes(self, hash_ids: Sequence[int], input_length: int) -> tuple[list[int], list[int]]:
        """(local hashes, sequence hashes) of the prompt's full engine blocks."""
        if not self.aligned:
            return block_hashes_of_tokens(expand_tokens(hash_ids, input_length, self.trace_block_size),
                                          self.block_size)
        seq = self.sequence_hashes(hash_ids, input_length)
        per_trace = self.trace_block_size // self.block_size
        local_of = self._local_of_token
        local: list[int] = []
        for j in range(0, len(seq), per_trace):
            local.extend([local_of[hash_ids[j // per_trace] & _U32_MASK]] * min(per_trace, len(seq) - j))
        return local, seq

    def sequence_hashes(self, hash_ids: Sequence[int], input_length: int) -> list[int]:
        """Sequence hashes only (what the KV cache and the indexer key on)."""
        if not self.aligned:
            return self.hashes(hash_ids, input_length)[1]
        if len(hash_ids) * self.trace_block_size < input_length:
            raise ValueError(f"hash_ids too short for input_length: {len(hash_ids)} x "
                             f"{self.trace_block_size} < {input_length}")
        per_trace = self.trace_block_size // self.block_size
        n_full = input_length // self.block_size
        full_trace_blocks, tail = divmod(n_full, per_trace)
        memo = self._chain_memo
        out: list[int] = []
        parent = -1  # not a u64, so it can key "no parent" in the memo
        for i in range(full_trace_blocks + (1 if tail else 0)):
            token = hash_ids[i] & _U32_MASK
            chain = memo.get((parent, token))
            if chain is None:
                chain = self._chain(parent, token, per_trace)
                memo[(parent, token)] = chain
            if i < full_trace_blocks:
                out.extend(chain)
                parent = chain[-1]
            else:
                out.extend(chain[:tail])
        return out

    def _chain(self, parent: int, token: int, n: int) -> tuple[int, ...]:
        local = self._local_of_token.get(token)
        if local is None:
            local = _xxh3(token.to_bytes(4, "little") * self.block_size, XXH3_SEED)
            self._local_of_token[token] = local
        pack, xxh3 = _pack_u64_pair, _xxh3
        if parent == -1:
            prev, chain = local, [local]
            n -= 1
        else:
            prev, chain = parent, []
        for _ in range(n):
            prev = xxh3(pack(prev, local), XXH3_SEED)
            chain.append(prev)
        return tuple(chain)
