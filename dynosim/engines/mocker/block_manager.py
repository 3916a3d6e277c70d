"""KV block manager of one mocker engine: per-request block tables on top of the ``KvCache`` pool.

Owns which blocks each request holds and every rule about them (vLLM v1's ``KVCacheManager`` over
its ``BlockPool``):

- a request's block table is ``req.blocks`` (its full blocks, in sequence order) plus
  ``req.partial`` (whether it holds one private, unfilled tail block). The fields stay on the
  ``Request`` so the scheduler's hot loops read them without a lookup, but this class is their only
  writer: nothing else appends, truncates or resets them;
- a block's identity (``block_hash``): a full prompt block is its chained sequence hash, shared
  through the prefix cache; any other full block (output, or every block without prefix caching)
  gets a private id that can never match a prompt;
- the prefix-hit cap (``get_computed_blocks``): a request that still has output to produce never
  reuses its whole sequence (the last token is recomputed for its logits), and with speculative
  decoding the last matched block is recomputed too (Dynamo 1.6.1: the verify pass needs it);
- allocation (``allocate_slots``): grow a request's table to hold a target number of tokens (plus
  room for ``nextn`` drafts when its sequence completes in the pass); a block becomes shared and
  hash-addressed only once every token in it is computed;
- ``free``: drop every reference a request holds, tail first.

Deciding who runs, and preempting when an allocation fails, is the scheduler's.
"""

from __future__ import annotations

from dynosim.engines.mocker.kv_cache import KvCache
from dynosim.request import Request

_OUTPUT_BLOCK_TAG = 1 << 63


class KvBlockManager:
    __slots__ = ("kv", "bs", "prefix_caching", "nextn")

    def __init__(self, kv: KvCache, block_size: int, prefix_caching: bool, nextn: int = 0):
        self.kv = kv
        self.bs = block_size
        self.prefix_caching = prefix_caching
        self.nextn = nextn

    # -- identity -----------------------------------------------------------------
    def block_hash(self, req: Request, j: int) -> int:
        """Identity of ``req``'s block j once full: its prompt hash, else a private output id."""
        if j < len(req.seq_hashes) and self.prefix_caching:
            return req.seq_hashes[j]
        return _OUTPUT_BLOCK_TAG | (req.rid << 24) | j

    # -- prefix cache -------------------------------------------------------------
    def get_computed_blocks(self, req: Request) -> tuple[int, int]:
        """(tokens of ``req``'s sequence served by the prefix cache, how many of those blocks are active).

        The hit is capped: never the whole sequence while output is left to produce (its last token
        must be computed), and one block less with speculative decoding. Active blocks are already
        referenced, so admitting the request takes no new room for them.
        """
        if not (self.prefix_caching and req.seq_hashes):
            return 0, 0
        bs = self.bs
        seq_len = req.isl + req.generated
        hit, active_hits = self.kv.match_prefix_split(req.seq_hashes)
        if req.generated < req.osl:
            cap = (seq_len - 1) // bs
            if hit > cap:
                hit = cap
                active_hits = min(active_hits, cap)
        if self.nextn and hit > 0:
            # with drafting, Dynamo 1.6.1 recomputes the last matched block (the verify pass needs it)
            hit -= 1
            active_hits = min(active_hits, hit)
        return min(hit * bs, seq_len), active_hits

    # -- allocation -----------------------------------------------------------------
    def lookahead(self, req: Request, target: int) -> int:
        """KV room for the drafts of a request whose sequence is complete after this pass."""
        if target < req.isl + req.generated:
            return 0
        return max(0, min(self.nextn, req.osl - req.generated - 1))

    def allocate_slots(self, req: Request, target_tokens: int) -> bool:
        """Grow ``req``'s blocks to hold ``target_tokens`` (plus draft room); False if the pool is full.

        On False the request keeps what it got so far (the caller preempts someone and retries, or
        frees it). A block becomes a shared, hash-addressed block only once all its tokens are
        computed; until then it is the request's private partial block.
        """
        if self.nextn:
            target_tokens += self.lookahead(req, target_tokens)
        bs = self.bs
        blocks = req.blocks
        if (len(blocks) + 1) * bs > target_tokens and (req.partial or len(blocks) * bs >= target_tokens):
            return True  # the last block already has room (every decode step but one in bs)
        kv = self.kv
        n_prompt_full = len(req.seq_hashes) if self.prefix_caching else 0
        while True:
            j = len(blocks)
            if (j + 1) * bs <= target_tokens:
                if req.partial:
                    h = self.block_hash(req, j)
                    kv.promote_partial(h, blocks[-1] if blocks else None)
                    blocks.append(h)
                    req.partial = False
                    continue
                if j < n_prompt_full:
                    upto = min(target_tokens // bs, n_prompt_full)
                    hashes = req.seq_hashes[j:upto]
                else:
                    hashes = [self.block_hash(req, j)]
                got = kv.acquire(hashes, blocks[-1] if blocks else None)
                blocks.extend(hashes[:got])
                if got < len(hashes):
                    return False
                continue
            if j * bs < target_tokens and not req.partial:
                if not kv.acquire_partial():
                    return False
                req.partial = True
            return True

    def seal_filled_partial(self, req: Request) -> None:
        """After tokens were computed without allocation (fast-forward): a partial block they filled
        exactly becomes a full block, as ``allocate_slots`` would have made it at the next step."""
        blocks = req.blocks
        if req.partial and req.computed == (len(blocks) + 1) * self.bs:
            h = self.block_hash(req, len(blocks))
            self.kv.promote_partial(h, blocks[-1] if blocks else None)
            blocks.append(h)
            req.partial = False

    def free(self, req: Request) -> None:
        """Release every block ``req`` holds (shared ones tail first, into the LRU of cached blocks)."""
        if req.partial:
            self.kv.release_partial()
            req.partial = False
        if req.blocks:
            self.kv.release(req.blocks)
            req.blocks = []

    # -- reading ----------------------------------------------------------------------
    def slots(self, req: Request) -> int:
        """Tokens ``req``'s block table can hold without allocating."""
        return (len(req.blocks) + req.partial) * self.bs
