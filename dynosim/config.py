"""Run configuration: validated at the edge, plain data inside."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dynosim.disagg.transfer import TransferConfig
from dynosim.engines.mocker.config import MockerArgs, merge_engine
from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.router.policies import canonical_mode, check_policy_options
from dynosim.router.queue import QUEUE_POLICIES


class RouterParams(BaseModel):
    """Router knobs, named as Dynamo's ``KvRouterConfig`` / CLI flags."""

    model_config = ConfigDict(extra="forbid")

    overlap_score_credit: float = Field(1.0, ge=0.0, le=1.0, description="cache-hit credit per overlap block")
    prefill_load_scale: float = Field(1.0, ge=0.0, description="weight of the prefill term in the KV cost")
    temperature: float = Field(0.0, ge=0.0, description="0: argmin; >0: softmax sampling over logits")
    tie_break: str = Field("random", pattern="^(random|tree-size)$", description="exact-tie rule of the KV cost")
    kv_events: bool = Field(True, description="False: approximate indexer from the router's own decisions")
    ttl_s: float = Field(120.0, gt=0, description="approximate indexer: lifetime of a recorded decision")
    max_tree_size: int = Field(1 << 20, gt=0, description="approximate indexer: prune above this many blocks")
    queue_threshold: float | None = Field(None, ge=0.0, description="queue when every worker's pending "
                                          "prefill tokens exceed this × max_num_batched_tokens (None: no queue)")
    queue_policy: str = Field("fcfs", description="fcfs | lcfs | wspt")
    device_types: list[str] | None = Field(None, description="device-aware-weighted: 'cpu' or 'cuda' per worker")
    cuda_to_cpu_ratio: int = Field(8, ge=1, description="device-aware-weighted: accelerator/CPU load ratio")
    policy_options: dict[str, Any] = Field(default_factory=dict,
                                           description="policy-specific options (e.g. thompson variant, params)")

    @field_validator("queue_policy")
    @classmethod
    def _known_queue_policy(cls, v: str) -> str:
        if v not in QUEUE_POLICIES:
            raise ValueError(f"unknown router queue policy {v!r}; choose from {list(QUEUE_POLICIES)}")
        return v


class DisaggConfig(BaseModel):
    """Disaggregated serving: a prefill pool hands each prompt's KV to a decode pool (xPyD)."""

    model_config = ConfigDict(extra="forbid")

    prefill_workers: int = Field(1, gt=0)
    decode_workers: int = Field(1, gt=0)
    transfer: TransferConfig = Field(default_factory=TransferConfig, description="KV hand-off timing")
    prefill_engine: dict[str, Any] = Field(default_factory=dict, description="engine fields of the prefill pool "
                                           "that differ from the run's engine (e.g. gpus_per_worker, timing_profile)")
    decode_engine: dict[str, Any] = Field(default_factory=dict, description="the same for the decode pool")


class RunConfig(BaseModel):
    """One simulated deployment replaying one trace."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, gt=0, description="aggregated engine workers (ignored when disagg is set)")
    disagg: DisaggConfig | None = Field(None, description="prefill and decode pools instead of one pool")
    router_mode: str = Field("round-robin", description="routing policy name")
    router: RouterParams = Field(default_factory=RouterParams)
    engine: MockerArgs = Field(default_factory=MockerArgs)
    trace_block_size: int = Field(512, gt=0, description="tokens per trace hash_id")
    arrival_speedup: float = Field(1.0, gt=0, description="divide arrival times and session delays by this")
    concurrency: int | None = Field(None, gt=0, description="closed loop: keep this many sessions open, the next "
                                    "starting when one ends (the trace's timestamps are ignored)")
    seed: int = 0
    fast_forward: bool = Field(True, description="take uniform decode stretches in one event (same results)")
    slo: SloConfig = Field(default_factory=SloConfig, description="objectives for goodput and the planner")
    planner: PlannerConfig | None = Field(None, description="autoscale the pools (None: a static deployment)")

    @field_validator("router_mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        return canonical_mode(v)

    @model_validator(mode="after")
    def _check_policy_options(self) -> "RunConfig":
        check_policy_options(self.router_mode, self.router.policy_options)  # an ignored key is an error
        return self

    @model_validator(mode="after")
    def _check_pools(self) -> "RunConfig":
        if self.disagg is not None:
            engines = self.pool_engines()
            if engines["prefill"].block_size != engines["decode"].block_size:
                raise ValueError("disagg: prefill_engine and decode_engine must use the same block_size "
                                 "(the KV hand-off moves whole blocks)")
        if self.planner is not None and (self.slo.ttft_ms is None or self.slo.itl_ms is None):
            raise ValueError("planner: slo.ttft_ms and slo.itl_ms must both be set (the planner sizes pools "
                             "to meet them)")
        return self

    def pool_engines(self) -> dict[str, MockerArgs]:
        """Engine args per pool: ``workers`` when aggregated, else ``prefill`` and ``decode``."""
        if self.disagg is None:
            return {"workers": self.engine}
        out = {}
        for pool, over in (("prefill", self.disagg.prefill_engine), ("decode", self.disagg.decode_engine)):
            try:
                out[pool] = MockerArgs(**merge_engine(self.engine.model_dump(), over))
            except ValidationError as exc:
                msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'engine'}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"disagg.{pool}_engine: {msgs}") from None
        return out

    def pool_sizes(self) -> dict[str, int]:
        """Starting workers per pool."""
        if self.disagg is None:
            return {"workers": self.workers}
        return {"prefill": self.disagg.prefill_workers, "decode": self.disagg.decode_workers}

    @property
    def num_gpus(self) -> int:
        """GPUs of the starting deployment."""
        engines = self.pool_engines()
        return sum(n * engines[p].gpus_per_worker for p, n in self.pool_sizes().items())
