"""Token-id prompts from trace ``hash_ids``, so shared hash prefixes are shared token prefixes in a real engine.

A Mooncake trace describes a prompt only as ``hash_ids`` (one per
``trace_block_size`` tokens) and an ``input_length``. To replay it against a
live engine, each hash id becomes a fixed block of ``trace_block_size`` token
ids, and the prompt is the concatenation of its blocks cut at
``input_length``. Hence:

- two requests whose ``hash_ids`` share a prefix of k ids send prompts that
  share exactly their first ``min(k * trace_block_size, both lengths)`` tokens
  (the engine's prefix cache then hits the same full blocks the simulator
  predicts);
- a block depends only on (hash id, position in block, seed): not on the
  request, its position in the prompt, or what came before;
- token ids lie in ``[low, high)`` (default ``[4, vocab_size)``), skipping the
  special ids at the bottom of most vocabularies (``<unk> <s> </s> <pad>``
  for the tiny Llama the CPU smoke builds); set ``high`` below the vocabulary
  size to skip special ids at the top (Llama-3 keeps them from 128000 on).

Tokens are a counter-based hash (splitmix64 of the hash id, then of the
position), so any block can be computed on its own, in bulk, with numpy; the
result is identical either way. The engine never re-tokenises a token-id
prompt, so the prompt length it sees is exactly ``input_length``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_U64 = 1 << 64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, element-wise on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _check_range(vocab_size: int, low: int, high: int | None) -> tuple[int, int]:
    hi = vocab_size if high is None else high
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if not 0 <= low < hi <= vocab_size:
        raise ValueError(f"token range [{low}, {hi}) must be non-empty and inside the vocabulary [0, {vocab_size})")
    return low, hi


def _tokens(hash_arr: np.ndarray, pos: np.ndarray, seed: int, low: int, high: int) -> np.ndarray:
    seed_key = _splitmix64(np.array([seed % _U64], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        base = _splitmix64(hash_arr ^ seed_key)
        v = _splitmix64(base + pos.astype(np.uint64))
    return (v % np.uint64(high - low)).astype(np.int64) + low


def block_tokens(hash_id: int, block_size: int, *, vocab_size: int, low: int = 4, high: int | None = None,
                 seed: int = 0) -> np.ndarray:
    """The ``block_size`` token ids (int64 array) that trace block ``hash_id`` stands for."""
    lo, hi = _check_range(vocab_size, low, high)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0 <= hash_id < _U64:
        raise ValueError(f"hash_id must be in [0, 2**64), got {hash_id}")
    h = np.full(block_size, hash_id, dtype=np.uint64)
    return _tokens(h, np.arange(block_size), seed, lo, hi)


def prompt_token_ids(hash_ids: Sequence[int], input_length: int, *, trace_block_size: int = 512,
                     vocab_size: int, low: int = 4, high: int | None = None, seed: int = 0) -> list[int]:
    """Token-id prompt of exactly ``input_length`` tokens for a trace request.

    Block i of the prompt is ``block_tokens(hash_ids[i], trace_block_size)``;
    the last block is cut so the prompt has ``input_length`` tokens. Raises
    ``ValueError`` when the hash ids cannot cover ``input_length`` (as the
    trace loader does) or the length is not positive.
    """
    lo, hi = _check_range(vocab_size, low, high)
    if trace_block_size < 1:
        raise ValueError(f"trace_block_size must be >= 1, got {trace_block_size}")
    if input_length < 1:
        raise ValueError(f"input_length must be >= 1, got {input_length}")
    n_blocks = -(-input_length // trace_block_size)
    if len(hash_ids) < n_blocks:
        raise ValueError(f"{len(hash_ids)} hash_ids x {trace_block_size} tokens cannot cover "
                         f"input_length {input_length} (need {n_blocks} ids)")
    ids = list(hash_ids[:n_blocks])
    if any(type(h) is not int and not isinstance(h, np.integer) for h in ids) or not all(0 <= int(h) < _U64 for h in ids):
        raise ValueError("hash_ids must be integers in [0, 2**64)")
    h = np.repeat(np.array([int(x) for x in ids], dtype=np.uint64), trace_block_size)[:input_length]
    pos = np.tile(np.arange(trace_block_size), n_blocks)[:input_length]
    return _tokens(h, pos, seed, lo, hi).tolist()


def prompts_for_rows(rows: Iterable, *, trace_block_size: int = 512, vocab_size: int, low: int = 4,
                     high: int | None = None, seed: int = 0) -> list[list[int]]:
    """Prompts for trace rows (``TraceRow`` objects or dicts with ``hash_ids`` and ``input_length``)."""
    out = []
    for r in rows:
        if isinstance(r, dict):
            hash_ids = r["hash_ids"]
            isl = r.get("input_length", r.get("input_tokens", len(hash_ids) * trace_block_size))
        else:
            hash_ids, isl = r.hash_ids, r.input_length
        out.append(prompt_token_ids(hash_ids, isl, trace_block_size=trace_block_size, vocab_size=vocab_size,
                                    low=low, high=high, seed=seed))
    return out


def shared_prefix_tokens(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token sequences (a helper for checks and tests)."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n
