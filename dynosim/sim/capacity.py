"""The mocker engine as the planner sees it: ``MockerArgs`` + ``TimingModel`` behind the planner's
capacity protocol (``dynosim.planner.capacity.WorkerCapacity``)."""

from __future__ import annotations

from dataclasses import dataclass

from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.timing import TimingModel


@dataclass(frozen=True)
class MockerCapacity:
    """One mocker worker's limits and pass times, priced by the timing model it runs on."""

    args: MockerArgs
    timing: TimingModel

    @property
    def gpus(self) -> int:
        return self.args.gpus_per_worker

    @property
    def kv_tokens(self) -> int:
        return self.args.num_gpu_blocks * self.args.block_size

    @property
    def max_num_seqs(self) -> int:
        return self.args.max_num_seqs

    @property
    def max_num_batched_tokens(self) -> int:
        return self.args.max_num_batched_tokens

    def prefill_ms(self, new_tokens: float) -> float:
        """A lone prompt's prefill time, in passes of at most ``max_num_batched_tokens`` (chunked prefill)."""
        n = max(1, int(round(new_tokens)))
        mbt = self.args.max_num_batched_tokens
        full, rem = divmod(n, mbt)
        t = full * self.timing.prefill_ms(1, mbt, 0)
        if rem:
            t += self.timing.prefill_ms(1, rem, 0)
        return t / self.args.speedup_ratio

    def decode_step_ms(self, batch: int, context: float) -> float:
        """One decode pass of ``batch`` requests holding ``context`` tokens each."""
        a = self.args
        total = a.num_gpu_blocks * a.block_size
        return self.timing.decode_ms(int(batch * context), context, total) / (a.speedup_ratio * a.decode_speedup_ratio)
