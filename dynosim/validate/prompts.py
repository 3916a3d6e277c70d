"""The live replay's prompts: token ids from a trace row's ``hash_ids``, and their block hashes.

Shared hash prefixes are shared token prefixes in the engine (``engines.live.prompts``), and the
router hashes those very tokens, so its indexer and the engine's KV events agree.
"""

from __future__ import annotations

import numpy as np

from dynosim.engines.live.prompts import prompt_token_ids
from dynosim.router.hashing import block_hashes_of_tokens
from dynosim.traces.mooncake import Trace

WARMUP_HASH_BASE = 1 << 60   # hash ids of warm-up prompts, far above any trace's


class PromptHasher:
    """What the frontend needs of a hasher, for live runs: the real prompt's block hashes.

    ``prepare(trace)`` builds every prompt (int32 arrays) and its hashes before
    the clock starts, so the replay's event loop does no hashing while it
    should be sending requests on time.
    """

    def __init__(self, block_size: int, trace_block_size: int, *, vocab_size: int, low: int = 4,
                 high: int | None = None, seed: int = 0):
        self.block_size = block_size
        self.trace_block_size = trace_block_size
        self._kw = dict(trace_block_size=trace_block_size, vocab_size=vocab_size, low=low, high=high, seed=seed)
        self._memo: dict[tuple[tuple[int, ...], int], tuple[np.ndarray, list[int]]] = {}

    def _entry(self, hash_ids, input_length: int) -> tuple[np.ndarray, list[int]]:
        key = (tuple(hash_ids), input_length)
        hit = self._memo.get(key)
        if hit is None:
            tokens = prompt_token_ids(hash_ids, input_length, **self._kw)
            hit = (np.asarray(tokens, dtype=np.int32), block_hashes_of_tokens(tokens, self.block_size)[1])
            self._memo[key] = hit
        return hit

    def prepare(self, trace: Trace) -> int:
        for session in trace.sessions:
            for turn in session.turns:
                self._entry(turn.row.hash_ids, turn.row.input_length)
        return len(self._memo)

    def prompt(self, hash_ids, input_length: int) -> list[int]:
        return self._entry(hash_ids, input_length)[0].tolist()

    def sequence_hashes(self, hash_ids, input_length: int) -> list[int]:
        return self._entry(hash_ids, input_length)[1]
