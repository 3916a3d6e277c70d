"""vLLM-v1-style scheduler of one mocker engine, on a logical clock.

``step()`` runs one scheduler pass at once and returns its duration; the
caller (the simulator's worker, or a test) owns time. A pass:

1. schedules running requests first, in order: a decode costs one token of
   the ``max_num_batched_tokens`` budget, an unfinished prompt continues as a
   chunk of what is left of the budget; KV blocks are allocated up to the new
   position and, when the pool is full, the newest running request is
   preempted (LIFO, or the oldest with FIFO) and retried until it fits;
2. admits waiting requests (only if nothing was preempted in this pass and
   while fewer than ``max_num_seqs`` run), reusing their longest cached prefix;
3. lasts ``prefill_ms(batch, mean isl, mean prefix) + decode_ms(active KV,
   mean context)``, divided by the speed-up ratios, or, for a ``whole_pass``
   timing model (``aic``, ``roofline``), ``pass_ms(prefilling requests, new
   prefill tokens, decoding requests, their summed context)``: one iteration
   priced as the database prices it; every request whose prompt is complete
   emits one token at the end of the pass.

Speculative decoding (``nextn`` > 0, Dynamo's ``aic_nextn``): every emitting
request drafts ``nextn`` tokens; draft k is accepted with probability
``accept_rates[k]`` if all before it were (a chain drawn from the worker's
seeded generator, in running order), so a request emits 1 + accepted tokens,
capped at what its output has left, all at the pass end. It still costs one
token of the pass budget, reserves KV for the drafts, and, as in Dynamo's vLLM
mocker, a request whose prefill ends in the pass joins that pass's decode term
and a prefix-cache hit gives up its last block (recomputed for verification).

``uniform_run()`` tells how many next passes are pure decode steps that change
nothing but token counts (no allocation, no completion, no admission); the
simulator fast-forwards over them with ``advance_uniform()``. Both paths give
the same results as stepping pass by pass.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.kv_cache import EventSink, KvCache
from dynosim.engines.mocker.timing import TimingModel, timing_for
from dynosim.request import Request, RequestStatus

_OUTPUT_BLOCK_TAG = 1 << 63


def _ns(ms: float) -> float:
    """Round a duration to whole nanoseconds, as Dynamo's engine clock does."""
    return round(ms * 1e6) / 1e6


@dataclass(slots=True)
class PassResult:
    duration_ms: float
    emitted: list[Request] = field(default_factory=list)    # got one token at pass end
    tokens: list[int] | None = None  # speculative decoding: tokens each emitted request got (None: one each)
    completed: list[Request] = field(default_factory=list)  # emitted their last token
    failed: list[Request] = field(default_factory=list)     # can never fit in this engine
    preempted: int = 0
    prefill_tokens: int = 0
    scheduled_tokens: int = 0  # budget used; a pass can take 0 ms yet make progress (e.g. output recompute)
    scheduled_requests: int = 0  # requests scheduled in the pass (running ones that got budget, plus admitted)


class VllmScheduler:
    def __init__(self, args: MockerArgs, timing: TimingModel | None = None, sink: EventSink | None = None,
                 role: str = "aggregated", spec_seed: int | None = None):
        """``role="decode"``: a disaggregated decode worker. The prompt's KV arrives from a prefill
        worker, so admitting it still takes blocks and token budget but no prefill time, and its
        first token costs a decode step (as Dynamo's mocker: its replay's TTFT agrees within 0.3%).
        Prefill workers need no role: their requests ask for one token. ``spec_seed``: the seed of
        speculative-decoding acceptance draws (default ``args.mtp_seed``; the simulator gives worker w
        ``mtp_seed + w``, as Dynamo)."""
        if role not in ("aggregated", "prefill", "decode"):
            raise ValueError(f"unknown worker role {role!r}")
        self.role = role
        self._prefill_free = role == "decode"
        self.args = args
        self.timing = timing if timing is not None else timing_for(args)
        # fixed cost of one forward pass that both the prefill and the decode time contain (measured profiles):
        # a pass doing both is charged it once
        self._pass_overhead_ms = float(self.timing.pass_overhead_ms)
        self._whole_pass = bool(self.timing.whole_pass)
        self.nextn = args.nextn if role != "prefill" else 0
        self._rates = np.asarray(args.accept_rates, float)
        self._spec_rng = np.random.default_rng(args.mtp_seed if spec_seed is None else spec_seed) \
            if self.nextn else None
        self.drafted = 0
        self.accepted = 0
        self.kv = KvCache(args.num_gpu_blocks, args.block_size, sink if args.enable_prefix_caching else None)
        self.bs = args.block_size
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.total_kv_tokens = args.num_gpu_blocks * args.block_size
        self.speed = args.speedup_ratio
        self.decode_speed = args.speedup_ratio * args.decode_speedup_ratio
        self.lifo = args.preemption_mode == "lifo"
        self.prefix_caching = args.enable_prefix_caching
        self.num_preemptions = 0
        self.passes = 0

    # -- queue --------------------------------------------------------------
    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        self.waiting.append(req)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- allocation -----------------------------------------------------------
    def _block_hash(self, req: Request, j: int) -> int:
        """Identity of ``req``'s block j once full: its prompt hash, else a private output id."""
        if j < len(req.seq_hashes) and self.args.enable_prefix_caching:
            return req.seq_hashes[j]
        return _OUTPUT_BLOCK_TAG | (req.rid << 24) | j

    def _allocate(self, req: Request, target_tokens: int) -> bool:
        """Grow ``req``'s blocks to hold ``target_tokens``; False if the pool is full.

        A block becomes a shared, hash-addressed block only once all its tokens
        are computed; until then it is the request's private partial block.
        """
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
                    h = self._block_hash(req, j)
                    kv.promote_partial(h, blocks[-1] if blocks else None)
                    blocks.append(h)
                    req.partial = False
                    continue
                if j < n_prompt_full:
                    upto = min(target_tokens // bs, n_prompt_full)
                    hashes = req.seq_hashes[j:upto]
                else:
                    hashes = [self._block_hash(req, j)]
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

    def _free(self, req: Request) -> None:
        if req.partial:
            self.kv.release_partial()
            req.partial = False
        if req.blocks:
            self.kv.release(req.blocks)
            req.blocks = []

    def _preempt(self, victim: Request) -> None:
        self._free(victim)
        victim.computed = 0
        victim.preemptions += 1
        victim.status = RequestStatus.WAITING
        self.waiting.appendleft(victim)
        self.num_preemptions += 1

    # -- one pass -------------------------------------------------------------
    def step(self) -> PassResult:
        """Run one scheduler pass; token times are the caller's ``now + duration``."""
        self.passes += 1
        bs = self.bs
        budget = self.args.max_num_batched_tokens
        running = self.running
        kv = self.kv
        preempted = 0
        batch = 0
        total_isl = 0
        total_prefix = 0

        # FIFO victims were scheduled earlier in this pass: what they took, to undo it
        done_here: dict[int, tuple[int, int, int]] | None = None if self.lifo else {}
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            remaining = req.isl + req.generated - req.computed
            n = remaining if remaining < budget else budget
            target = req.computed + n
            current_preempted = False
            while not self._allocate(req, target + self._lookahead(req, target) if self.nextn else target):
                victim = running.pop() if self.lifo else running.pop(0)
                self._preempt(victim)
                preempted += 1
                if victim is req:
                    current_preempted = True
                    break
                if done_here is not None:
                    i -= 1
                    n_v, isl_v, prefix_v = done_here.pop(id(victim))
                    budget += n_v
                    if isl_v:
                        batch -= 1
                        total_isl -= isl_v
                        total_prefix -= prefix_v
            if current_preempted:
                continue  # the next request now sits at index i (with LIFO there is none)
            prompt_before = min(req.computed, req.isl)
            prompt_now = min(target, req.isl) - prompt_before
            if prompt_now > 0:
                batch += 1
                total_isl += prompt_before + prompt_now
                total_prefix += prompt_before
            if done_here is not None:
                done_here[id(req)] = (n, prompt_before + prompt_now, prompt_before) if prompt_now > 0 else (n, 0, 0)
            req.computed = target
            budget -= n
            i += 1

        failed: list[Request] = []
        n_before_admission = len(running)
        if preempted == 0:
            waiting = self.waiting
            max_seqs = self.args.max_num_seqs
            capacity = self.args.num_gpu_blocks
            while waiting and len(running) < max_seqs and budget > 0:
                req = waiting[0]
                seq_len = req.seq_len
                need_blocks = -(-seq_len // bs)
                if need_blocks > capacity and not req.admitted:
                    waiting.popleft()
                    req.fail(f"needs {need_blocks} KV blocks, engine holds {capacity}")
                    failed.append(req)
                    continue
                cached = 0
                active_hits = 0
                if self.args.enable_prefix_caching and req.seq_hashes:
                    hit, active_hits = kv.match_prefix_split(req.seq_hashes)
                    if req.generated < req.osl:
                        cap = (seq_len - 1) // bs
                        if hit > cap:
                            hit = cap
                            active_hits = min(active_hits, cap)
                    if self.nextn and hit > 0:
                        # with drafting, Dynamo 1.6.1 recomputes the last matched block (the verify pass needs it)
                        hit -= 1
                        active_hits = min(active_hits, hit)
                    cached = min(hit * bs, seq_len)
                if need_blocks - active_hits > capacity - kv.num_active:
                    break  # head-of-line: wait until enough blocks are released
                prompt_before = min(cached, req.isl)
                if not self.args.enable_chunked_prefill and req.isl - prompt_before > budget:
                    if not running:
                        # Even a whole idle pass cannot take this prompt: it would block the queue forever.
                        waiting.popleft()
                        req.fail(f"prompt needs {req.isl - prompt_before} tokens in one pass, "
                                 f"max_num_batched_tokens is {self.args.max_num_batched_tokens} "
                                 "(chunked prefill disabled)")
                        failed.append(req)
                        continue
                    break
                n = min(seq_len - cached, budget)
                target = cached + n
                if not self._allocate(req, target + self._lookahead(req, target) if self.nextn else target):
                    self._free(req)
                    break
                waiting.popleft()
                if not req.admitted:
                    req.admitted = True
                    req.first_reused = min(cached, req.isl)
                if cached > req.reused:
                    req.reused = min(cached, req.isl)
                req.status = RequestStatus.RUNNING
                running.append(req)
                prompt_now = min(target, req.isl) - prompt_before
                if prompt_now > 0:
                    batch += 1
                    total_isl += prompt_before + prompt_now
                    total_prefix += prompt_before
                req.computed = target
                budget -= n

        result = PassResult(0.0, preempted=preempted, failed=failed,
                            scheduled_tokens=self.args.max_num_batched_tokens - budget,
                            scheduled_requests=i + len(running) - n_before_admission)
        prefill_ms = 0.0
        if batch and not self._prefill_free:
            result.prefill_tokens = total_isl - total_prefix
            if not self._whole_pass:
                prefill_ms = _ns(self.timing.prefill_ms(batch, total_isl // batch, total_prefix // batch) / self.speed)

        # Every running request whose sequence is computed emits a token at pass end. Only
        # requests that already have output cost decode time (a request whose prefill
        # finished in this pass gets its first token for the prefill's price); the decode
        # step is timed on their summed context length. Durations are whole nanoseconds.
        emitted = result.emitted
        ctx_sum = 0
        n_dec = 0
        # with drafts, a request whose prefill ends in this pass is verified in it too (Dynamo's vLLM mocker)
        spec = self.nextn > 0
        for req in self.running:
            gen = req.generated
            seq_len = req.isl + gen
            if req.computed >= seq_len and gen < req.osl:
                emitted.append(req)
                if gen or self._prefill_free or spec:  # a decode worker's first token is a decode step
                    ctx_sum += seq_len
                    n_dec += 1
        decode_ms = 0.0
        if self._whole_pass:
            n_pre = batch if not self._prefill_free else 0
            pre_tok = result.prefill_tokens
            if pre_tok or n_dec:  # the whole iteration, carried in prefill_ms (decode_ms stays 0)
                speed = self.speed if pre_tok else self.decode_speed
                prefill_ms = _ns(self.timing.pass_ms(n_pre, pre_tok, n_dec, ctx_sum) / speed)
        elif n_dec:
            decode_ms = _ns(self.timing.decode_ms(ctx_sum, ctx_sum / n_dec, self.total_kv_tokens) / self.decode_speed)
        if emitted:
            completed = result.completed
            burst = self._draw_bursts(emitted) if spec else None
            result.tokens = burst
            for i, req in enumerate(emitted):
                if burst is not None and burst[i] > 1:
                    req.generated += burst[i]
                    req.computed += burst[i] - 1
                else:
                    req.generated += 1
                if req.generated >= req.osl:
                    completed.append(req)
            if completed:
                done = set(map(id, completed))
                self.running = [r for r in self.running if id(r) not in done]
                for req in completed:
                    self._free(req)
                    req.status = RequestStatus.DONE
        if self._pass_overhead_ms and prefill_ms and decode_ms:
            decode_ms -= min(self._pass_overhead_ms, prefill_ms, decode_ms)
        result.duration_ms = prefill_ms + decode_ms
        return result

    # -- speculative decoding ----------------------------------------------------
    def _lookahead(self, req: Request, target: int) -> int:
        """KV room for the drafts of a request whose sequence is complete after this pass."""
        if target < req.isl + req.generated:
            return 0
        return max(0, min(self.nextn, req.osl - req.generated - 1))

    def _draw_bursts(self, emitted: list[Request]) -> list[int]:
        """Tokens each emitting request gets: 1 + the accepted prefix of its drafts, capped by its output left."""
        draws = self._spec_rng.random((len(emitted), self.nextn)) < self._rates
        accepted = np.cumprod(draws, axis=1).sum(axis=1)
        out = []
        for req, a in zip(emitted, accepted.tolist()):
            left = req.osl - req.generated
            self.drafted += self.nextn
            self.accepted += a
            out.append(min(1 + a, left))
        return out

    # -- fast-forward ---------------------------------------------------------
    def uniform_run(self) -> int:
        """How many next passes are pure decode steps with no allocation, completion or admission.

        None with speculative decoding: each pass's tokens are random draws.
        """
        running = self.running
        if self.nextn or not running or (self.waiting and len(running) < self.args.max_num_seqs):
            return 0
        if len(running) > self.args.max_num_batched_tokens:
            return 0
        bs = self.bs
        k = 1 << 60
        for req in running:
            seq_len = req.isl + req.generated
            if req.computed != seq_len - 1 or req.computed < req.isl:
                return 0
            room = (len(req.blocks) + req.partial) * bs - seq_len + 1
            left = req.osl - req.generated - 1
            m = room if room < left else left
            if m < k:
                k = m
                if k <= 0:
                    return 0
        return k

    def uniform_durations(self, k: int) -> np.ndarray:
        """Durations (ms) of the next ``k`` uniform passes: the summed context grows by n per pass."""
        running = self.running
        n = len(running)
        ctx0 = sum(r.isl + r.generated for r in running)
        ctx = ctx0 + n * np.arange(k, dtype=np.float64)
        return np.round(self.timing.decode_ms_vec(ctx, ctx / n, self.total_kv_tokens) / self.decode_speed * 1e6) / 1e6

    def advance_uniform(self, c: int) -> None:
        """Apply ``c`` uniform passes: every running request computes and emits ``c`` tokens.

        A partial block filled by the last of them becomes a full block, as stepping does.
        """
        self.passes += c
        bs = self.bs
        for req in self.running:
            req.computed += c
            req.generated += c
            # The stretch's last pass may fill the partial block exactly; stepping promotes it then.
            if req.partial and req.computed == (len(req.blocks) + 1) * bs:
                h = self._block_hash(req, len(req.blocks))
                self.kv.promote_partial(h, req.blocks[-1] if req.blocks else None)
                req.blocks.append(h)
                req.partial = False
