"""Planner and SLO settings, validated at the edge (defaults follow Dynamo's planner)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.planner.predictors import PREDICTORS


class SloConfig(BaseModel):
    """Service-level objectives: what goodput counts and what the planner's SLA mode aims at."""

    model_config = ConfigDict(extra="forbid")

    ttft_ms: float | None = Field(500.0, gt=0, description="time to first token objective (None: none)")
    itl_ms: float | None = Field(50.0, gt=0, description="inter-token latency objective, per-request mean "
                                 "(None: none)")
    e2e_ms: float | None = Field(None, gt=0, description="end-to-end latency objective (None: none)")


class PlannerConfig(BaseModel):
    """An autoscaling planner in the loop (Dynamo ``planner`` semantics, see README "Planner")."""

    model_config = ConfigDict(extra="forbid")

    optimization_target: Literal["throughput", "latency", "sla"] = Field(
        "sla", description="load-scaling thresholds; only 'sla' also sizes pools from predicted demand")
    throughput_scaling: bool | None = Field(
        None, description="size pools from predicted demand every throughput interval (default: on for sla; "
                          "Dynamo forces it off for the other targets)")
    load_scaling: bool = Field(True, description="±1 replica from engine load every load interval")
    throughput_interval_s: float = Field(180.0, gt=0, description="demand window and throughput-scaling period")
    load_interval_s: float = Field(5.0, gt=0, description="load-scaling period")
    predictor: str = Field("arima", description=f"load predictor: {', '.join(PREDICTORS)}")
    min_replicas: int = Field(1, ge=1, description="floor per pool")
    max_replicas: int | None = Field(None, ge=1, description="cap per pool (None: the GPU budget alone)")
    max_gpu_budget: int = Field(16, ge=1, description="GPUs all pools' target replicas may use together")
    startup_time_s: float = Field(60.0, ge=0, description="a new worker becomes routable this long after the decision")
    load_min_observations: int = Field(5, ge=1, description="load ticks a pool is observed after its last change "
                                       "before the next load step (a worker that just joined is idle)")
    load_down_sensitivity: float = Field(0.8, gt=0, le=1,
                                         description="sla target: scale down when every engine is below SLO × this")
    max_kv_utilization: float = Field(0.8, gt=0, le=1,
                                      description="throughput sizing: the mean decode batch fills the KV cache to at "
                                                  "most this share (1.0: Dynamo's formula, no headroom)")
    max_kv_hit_rate: float = Field(0.95, ge=0, le=1, description="cap on the predicted prefix-hit rate")

    @model_validator(mode="after")
    def _check(self) -> "PlannerConfig":
        if self.predictor not in PREDICTORS:
            raise ValueError(f"planner.predictor: unknown {self.predictor!r}; choose from {sorted(PREDICTORS)}")
        if self.throughput_scaling and self.optimization_target != "sla":
            raise ValueError("planner.throughput_scaling needs optimization_target 'sla' (as Dynamo's planner: "
                             "the other targets scale on load alone)")
        if not self.load_scaling and not self.uses_throughput_scaling:
            raise ValueError("planner: both throughput_scaling and load_scaling are off; nothing would scale")
        if self.load_scaling and self.load_interval_s >= self.throughput_interval_s and self.uses_throughput_scaling:
            raise ValueError("planner.load_interval_s must be below throughput_interval_s")
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError("planner.max_replicas is below min_replicas")
        return self

    @property
    def uses_throughput_scaling(self) -> bool:
        if self.throughput_scaling is None:
            return self.optimization_target == "sla"
        return self.throughput_scaling
