"""vLLM-v1-style scheduler of one mocker engine, on a logical clock (implements ``contract.Scheduler``).

Owns the request queues (``waiting``, ``running``), the pass's decision and its application. As in
vLLM v1 (``Scheduler.schedule()`` → ``SchedulerOutput``, then ``update_from_output()``), a pass is

``schedule() -> SchedulePlan``: who runs and how many tokens each computes, who is preempted,
admitted or failed. KV blocks are allocated here, through the block manager
(``block_manager.KvBlockManager``), because the decision depends on them:

1. running requests first, in order: a decode costs one token of the ``max_num_batched_tokens``
   budget, an unfinished prompt continues as a chunk of what is left of the budget; blocks are
   allocated up to the new position and, when the pool is full, the newest running request is
   preempted (LIFO, or the oldest with FIFO) and the allocation retried until it fits;
2. waiting requests are admitted (only if nothing was preempted in this pass and while fewer than
   ``max_num_seqs`` run), reusing their longest cached prefix (capped by the block manager).

``apply(plan) -> PassResult``: prices the pass with the timing model, emits tokens and completes
requests. It lasts ``prefill_ms(batch, mean isl, mean prefix) + decode_ms(active KV, mean context)``,
divided by the speed-up ratios, or, for a ``whole_pass`` timing model (``aic``, ``roofline``),
``pass_ms(prefilling requests, new prefill tokens, decoding requests, their summed context)``: one
iteration priced as the database prices it; every request whose prompt is complete emits one token
at the end of the pass. ``step()`` is ``apply(schedule())``.

Speculative decoding (``nextn`` > 0, Dynamo's ``aic_nextn``): every emitting request drafts
``nextn`` tokens; draft k is accepted with probability ``accept_rates[k]`` if all before it were (a
chain drawn from the worker's seeded generator, in running order), so a request emits 1 + accepted
tokens, capped at what its output has left, all at the pass end. It still costs one token of the
pass budget, reserves KV for the drafts, and, as in Dynamo's vLLM mocker, a request whose prefill
ends in the pass joins that pass's decode term and a prefix-cache hit gives up its last block
(recomputed for verification).

``uniform_run()`` tells how many next passes are pure decode steps that change nothing but token
counts (no allocation, no completion, no admission); the simulator fast-forwards over them with
``advance_uniform()``. Both paths give the same results as stepping pass by pass.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dynosim.engines.mocker.block_manager import KvBlockManager
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.contract import PassResult
from dynosim.engines.mocker.kv_cache import EventSink, KvCache
from dynosim.engines.mocker.timing import TimingModel, timing_for
from dynosim.request import Request, RequestStatus

__all__ = ["SchedulePlan", "VllmScheduler"]


def _ns(ms: float) -> float:
    """Round a duration to whole nanoseconds, as Dynamo's engine clock does."""
    return round(ms * 1e6) / 1e6


@dataclass(slots=True)
class SchedulePlan:
    """What one pass does, decided (and its KV allocated) by ``schedule()``, before ``apply()`` prices it.

    ``scheduled`` and ``num_tokens`` are parallel: the requests that compute tokens in the pass
    (running ones first, then the admitted ones, in running order) and how many each. Every
    scheduled request's ``computed`` already counts its tokens (as vLLM advances
    ``num_computed_tokens`` when it schedules).
    """

    scheduled: list[Request] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)  # back to waiting, their blocks freed
    admitted: list[Request] = field(default_factory=list)   # waiting → running in this pass
    failed: list[Request] = field(default_factory=list)     # can never fit in this engine
    budget_used: int = 0                                    # tokens of max_num_batched_tokens taken


class VllmScheduler:
    def __init__(self, args: MockerArgs, timing: TimingModel | None = None, sink: EventSink | None = None,
                 role: str = "aggregated", spec_seed: int | None = None):
        """``role="decode"``: a disaggregated decode worker. The prompt's KV arrives from a prefill
        worker, so admitting it still takes blocks and token budget but no prefill time, and its
        first token costs a decode step (as Dynamo's mocker: its replay's TTFT agrees within 0.3%).
        Prefill workers need no role: their requests ask for one token. ``spec_seed``: the seed of
        speculative-decoding acceptance draws (default ``args.mtp_seed``; the simulator gives worker w
        ``mtp_seed + w``, as Dynamo). ``sink``: where the KV cache reports its ``KvEvent``s (only
        with prefix caching)."""
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
        self.bs = args.block_size
        pool = KvCache(args.num_gpu_blocks, args.block_size, sink if args.enable_prefix_caching else None)
        self.kv_manager = KvBlockManager(pool, args.block_size, args.enable_prefix_caching, self.nextn)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.total_kv_tokens = args.num_gpu_blocks * args.block_size
        self.speed = args.speedup_ratio
        self.decode_speed = args.speedup_ratio * args.decode_speedup_ratio
        self.lifo = args.preemption_mode == "lifo"
        self.num_preemptions = 0
        self.passes = 0

    @property
    def kv(self) -> KvCache:
        """The block pool under the block manager."""
        return self.kv_manager.kv

    @kv.setter
    def kv(self, pool: KvCache) -> None:  # tests swap in an instrumented pool
        self.kv_manager.kv = pool

    # -- queue --------------------------------------------------------------
    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        self.waiting.append(req)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def _free(self, req: Request) -> None:
        """Give back every KV block ``req`` holds (preempted, completed, or not admitted after all)."""
        self.kv_manager.free(req)

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
        return self.apply(self.schedule())

    def schedule(self) -> SchedulePlan:
        """Decide the next pass: schedule running requests, then admit waiting ones; allocates their KV."""
        scheduled: list[Request] = []
        num_tokens: list[int] = []
        preempted: list[Request] = []
        plan = SchedulePlan(scheduled, num_tokens, preempted, [], [])  # (no default factories on the hot path)
        budget = max_budget = self.args.max_num_batched_tokens
        # 1. running requests, in order, preempting when KV runs out (inline: this runs every pass)
        running = self.running
        allocate = self.kv_manager.allocate_slots
        fifo = not self.lifo
        i = 0  # running[:i] are exactly the requests scheduled so far, in order
        while i < len(running) and budget > 0:
            req = running[i]
            remaining = req.isl + req.generated - req.computed
            n = remaining if remaining < budget else budget
            target = req.computed + n
            while not allocate(req, target):
                victim = running.pop(0) if fifo else running.pop()
                self._preempt(victim)
                preempted.append(victim)
                if victim is req:
                    break  # it preempted itself: the next request now sits at index i (with LIFO there is none)
                if fifo:  # the oldest was scheduled first in this pass: give back its budget
                    i -= 1
                    scheduled.pop(0)
                    budget += num_tokens.pop(0)
            else:
                req.computed = target
                scheduled.append(req)
                num_tokens.append(n)
                budget -= n
                i += 1
        # 2. waiting requests, unless this pass had to preempt
        if not preempted and self.waiting:
            budget = self._schedule_waiting(plan, budget)
        plan.budget_used = max_budget - budget
        return plan

    def _schedule_waiting(self, plan: SchedulePlan, budget: int) -> int:
        """Admit waiting requests, head first, while they fit; returns the budget left."""
        waiting, running = self.waiting, self.running
        manager = self.kv_manager
        kv = manager.kv
        bs = self.bs
        args = self.args
        max_seqs = args.max_num_seqs
        capacity = args.num_gpu_blocks
        while waiting and len(running) < max_seqs and budget > 0:
            req = waiting[0]
            seq_len = req.seq_len
            need_blocks = -(-seq_len // bs)
            if need_blocks > capacity and not req.admitted:
                waiting.popleft()
                req.fail(f"needs {need_blocks} KV blocks, engine holds {capacity}")
                plan.failed.append(req)
                continue
            cached, active_hits = manager.get_computed_blocks(req)
            if need_blocks - active_hits > capacity - kv.num_active:
                break  # head-of-line: wait until enough blocks are released
            prompt_before = min(cached, req.isl)
            if not args.enable_chunked_prefill and req.isl - prompt_before > budget:
                if not running:
                    # Even a whole idle pass cannot take this prompt: it would block the queue forever.
                    waiting.popleft()
                    req.fail(f"prompt needs {req.isl - prompt_before} tokens in one pass, "
                             f"max_num_batched_tokens is {args.max_num_batched_tokens} "
                             "(chunked prefill disabled)")
                    plan.failed.append(req)
                    continue
                break
            n = min(seq_len - cached, budget)
            target = cached + n
            if not manager.allocate_slots(req, target):
                self._free(req)
                break
            waiting.popleft()
            if not req.admitted:
                req.admitted = True
                req.first_reused = prompt_before
            if cached > req.reused:
                req.reused = prompt_before
            req.status = RequestStatus.RUNNING
            running.append(req)
            req.computed = target
            plan.scheduled.append(req)
            plan.num_tokens.append(n)
            plan.admitted.append(req)
            budget -= n
        return budget

    def apply(self, plan: SchedulePlan) -> PassResult:
        """Carry out a scheduled pass: price it, emit every computed request's token(s), complete them."""
        self.passes += 1
        result = PassResult(0.0, preempted=len(plan.preempted), failed=plan.failed,
                            scheduled_tokens=plan.budget_used, scheduled_requests=len(plan.scheduled))
        # the prompt tokens of the pass: requests whose prompt advanced, and where it stood before
        batch = total_isl = total_prefix = 0
        for req, n in zip(plan.scheduled, plan.num_tokens):
            isl = req.isl
            target = req.computed
            before = target - n
            if before < isl and n:
                batch += 1
                total_isl += target if target < isl else isl
                total_prefix += before
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
            self._emit(result)
        if self._pass_overhead_ms and prefill_ms and decode_ms:
            decode_ms -= min(self._pass_overhead_ms, prefill_ms, decode_ms)
        result.duration_ms = prefill_ms + decode_ms
        return result

    def _emit(self, result: PassResult) -> None:
        """Each emitted request gets its token(s); those that reach their output length complete."""
        emitted, completed = result.emitted, result.completed
        burst = self._draw_bursts(emitted) if self.nextn > 0 else None
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

    # -- speculative decoding ----------------------------------------------------
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
            room = (len(req.blocks) + req.partial) * bs - seq_len + 1  # KvBlockManager.slots(req), inlined
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
        seal = self.kv_manager.seal_filled_partial
        for req in self.running:
            req.computed += c
            req.generated += c
            if req.partial and req.computed == (len(req.blocks) + 1) * bs:  # rare: filled exactly
                seal(req)
