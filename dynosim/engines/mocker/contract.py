"""The seam between a simulated engine and everything that drives or reads it.

Owns ``Scheduler`` (the protocol every mocker scheduler implements: vLLM's today, SGLang's and
TRT-LLM's next, each a new module in this package), ``KvPoolView`` (what callers read of its KV
pool) and ``PassResult`` (what one pass returns). The simulator's worker (``sim.worker``), the
planner's engine load (``sim.scaling``), the timeline sampler (``metrics.timeline``), routing
metrics and the run summary (``sim.simulation``) read a scheduler through these members only;
anything else a scheduler has is its own business.

Time is the caller's: a scheduler never sleeps or reads a clock. ``step()`` runs one pass and says
how long it lasts; the worker stamps its tokens at ``now + duration_ms``.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from dynosim.request import Request


@dataclass(slots=True)
class PassResult:
    """One scheduler pass as the worker sees it: its duration and what happened to which requests."""

    duration_ms: float
    emitted: list[Request] = field(default_factory=list)    # got one token at pass end
    tokens: list[int] | None = None  # speculative decoding: tokens each emitted request got (None: one each)
    completed: list[Request] = field(default_factory=list)  # emitted their last token
    failed: list[Request] = field(default_factory=list)     # can never fit in this engine
    preempted: int = 0
    prefill_tokens: int = 0
    scheduled_tokens: int = 0  # budget used; a pass can take 0 ms yet make progress (e.g. output recompute)
    scheduled_requests: int = 0  # requests scheduled in the pass (running ones that got budget, plus admitted)


@runtime_checkable
class KvPoolView(Protocol):
    """What callers read of an engine's KV block pool (``kv_cache.KvCache`` implements it)."""

    capacity: int                 # blocks in the pool
    block_size: int               # tokens per block

    @property
    def num_active(self) -> int:
        """Blocks referenced by at least one running request."""
        ...

    @property
    def inactive(self) -> Sized:
        """Blocks held by nobody but still cached (free to evict); callers take its ``len``."""
        ...

    def check(self) -> None:
        """Raise ``AssertionError`` if the pool's accounting is broken (tests, invariant checks)."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """One simulated engine's scheduler on a logical clock.

    Lifecycle of a request: ``add`` → waiting → (admitted) running → completed or failed, with
    preemption back to waiting. Fast-forward: ``uniform_run()`` says how many next passes are pure
    decode steps; the worker prices them with ``uniform_durations`` and applies them with
    ``advance_uniform`` — the same results as calling ``step()`` that many times.
    """

    role: str                     # "aggregated", "prefill" or "decode"
    bs: int                       # tokens per KV block
    total_kv_tokens: int          # KV capacity in tokens
    running: list[Request]        # admitted, in scheduling order
    waiting: Sequence[Request]    # added or preempted, not running (head first)
    num_preemptions: int          # requests preempted so far
    passes: int                   # passes run so far (fast-forwarded ones included)
    nextn: int                    # speculative decoding: drafts per step (0: none)
    drafted: int                  # draft tokens proposed so far
    accepted: int                 # draft tokens accepted so far

    @property
    def kv(self) -> KvPoolView: ...

    @property
    def has_work(self) -> bool:
        """Anything running or waiting."""
        ...

    def add(self, req: Request) -> None:
        """Queue a routed request (it waits until a pass admits it)."""
        ...

    def step(self) -> PassResult:
        """Run one pass now; its tokens are the caller's ``now + duration_ms``."""
        ...

    def uniform_run(self) -> int:
        """How many next passes change nothing but token counts (0 or 1: step instead)."""
        ...

    def uniform_durations(self, k: int) -> np.ndarray:
        """Durations (ms) of the next ``k`` uniform passes."""
        ...

    def advance_uniform(self, c: int) -> None:
        """Apply ``c`` uniform passes at once."""
        ...
