"""Run configuration: validated at the edge, plain data inside."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dynosim.engines.mocker.config import MockerArgs
from dynosim.router.policies import ALIASES, POLICIES


class RunConfig(BaseModel):
    """One simulated deployment replaying one trace."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, gt=0, description="aggregated engine workers")
    router_mode: str = Field("round-robin", description="routing policy name")
    engine: MockerArgs = Field(default_factory=MockerArgs)
    trace_block_size: int = Field(512, gt=0, description="tokens per trace hash_id")
    arrival_speedup: float = Field(1.0, gt=0, description="divide arrival times and session delays by this")
    seed: int = 0
    fast_forward: bool = Field(True, description="take uniform decode stretches in one event (same results)")

    @field_validator("router_mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        key = ALIASES.get(v, v)
        if key not in POLICIES:
            raise ValueError(f"unknown router mode {v!r}; choose from {sorted(POLICIES)}")
        return key

    @property
    def num_gpus(self) -> int:
        return self.workers * self.engine.gpus_per_worker
