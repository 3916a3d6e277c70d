"""What the planner needs to know of one worker: the capacity protocol.

The planner sizes pools from a worker's limits and pass times, never from an
engine's own settings or timing classes: whoever runs the workers (the
simulator's mocker engines, a calibrated live deployment) adapts its engine to
this protocol (``dynosim.sim.capacity.MockerCapacity`` for the mocker).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class WorkerCapacity(Protocol):
    """One worker of a pool, as the planner prices it."""

    @property
    def gpus(self) -> int:
        """GPUs one worker holds (counted against ``max_gpu_budget``)."""

    @property
    def kv_tokens(self) -> int:
        """KV cache capacity in tokens."""

    @property
    def max_num_seqs(self) -> int:
        """Largest batch one pass runs."""

    @property
    def max_num_batched_tokens(self) -> int:
        """Token budget of one pass (the chunk size of chunked prefill)."""

    def prefill_ms(self, new_tokens: float) -> float:
        """A lone prompt of ``new_tokens`` uncached tokens, prefilled in the engine's (chunked) passes."""

    def decode_step_ms(self, batch: int, context: float) -> float:
        """One decode pass of ``batch`` requests holding ``context`` tokens each."""
