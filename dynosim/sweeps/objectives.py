"""The user's objectives for a sweep: which latency limits a deployment must meet, and at which load.

One object drives everything that judges a point: the filter (``meets``), the per-objective misses a
recommendation reports (``misses``), and the per-request goodput each simulation counts (``slo``). Limits
are in milliseconds and apply to the point's aggregate figure (p90 TTFT, mean or p90 ITL, p90 E2E); a point
with failed requests never meets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynosim.metrics.catalog import label as metric_label
from dynosim.planner.config import SloConfig


@dataclass(frozen=True)
class Objective:
    key: str          # the field of Objectives
    column: str       # the point's figure it limits
    label: str        # how a person reads it


# each limits a sweep row's figure (a metric catalogue key), read by the catalogue's label
OBJECTIVES = tuple(Objective(f"{column}_ms", column, metric_label(column))
                   for column in ("ttft_p90", "itl_mean", "itl_p90", "e2e_p90"))


@dataclass(frozen=True)
class Miss:
    """One objective a point missed: its figure, the limit, and by how much (``over`` ms, ``over_pct``)."""

    objective: str
    label: str
    limit: float
    value: float

    @property
    def over(self) -> float:
        return self.value - self.limit

    @property
    def over_pct(self) -> float:
        return 100.0 * self.over / self.limit

    def as_dict(self) -> dict:
        """JSON-able: a missing figure (nothing completed) is null, as are its overshoots."""
        known = self.value == self.value
        return {"objective": self.objective, "label": self.label, "limit": self.limit,
                "value": self.value if known else None, "over": self.over if known else None,
                "over_pct": self.over_pct if known else None}


class Objectives(BaseModel):
    """Latency limits (ms; None: not an objective) and the load the operator expects."""

    model_config = ConfigDict(extra="forbid")

    ttft_p90_ms: float | None = Field(None, gt=0, description="p90 time to first token")
    itl_mean_ms: float | None = Field(None, gt=0, description="mean inter-token latency")
    itl_p90_ms: float | None = Field(None, gt=0, description="p90 of the per-request inter-token latency")
    e2e_p90_ms: float | None = Field(None, gt=0, description="p90 end-to-end latency")
    target_load: float = Field(1.0, gt=0, description="the load to recommend for: an arrival-rate factor (1: the "
                                                      "trace's own rate), or a concurrency in a closed-loop sweep")
    target_kind: Literal["rate", "concurrency"] = "rate"

    @model_validator(mode="after")
    def _one_itl(self) -> "Objectives":
        if self.itl_mean_ms is not None and self.itl_p90_ms is not None:
            raise ValueError("give one ITL objective: itl_mean_ms (--itl) or itl_p90_ms (--itl-p90)")
        return self

    def limits(self) -> list[tuple[Objective, float]]:
        return [(o, getattr(self, o.key)) for o in OBJECTIVES if getattr(self, o.key) is not None]

    @property
    def any(self) -> bool:
        return bool(self.limits())

    def slo(self) -> SloConfig | None:
        """The per-request objectives goodput counts (each request's TTFT, ITL and E2E against the same limits);
        None when no objective is given (the simulation's defaults then stand)."""
        if not self.any:
            return None
        return SloConfig(ttft_ms=self.ttft_p90_ms, itl_ms=self.itl_mean_ms or self.itl_p90_ms, e2e_ms=self.e2e_p90_ms)

    def misses(self, row) -> list[Miss]:
        """The objectives ``row`` (a point: mapping or Series) misses; a missing figure (NaN) misses."""
        out = []
        for o, limit in self.limits():
            v = float(row.get(o.column, float("nan")))
            if not v <= limit:
                out.append(Miss(o.key, o.label, limit, v))
        return out

    def meets(self, df: pd.DataFrame) -> pd.Series:
        """Points meeting every objective, without a failed request."""
        ok = pd.Series(True, index=df.index)
        for o, limit in self.limits():
            ok &= df[o.column] <= limit
        if "failed" in df:
            ok &= df["failed"] == 0
        return ok

    def text(self) -> str:
        parts = [f"{o.label} ≤ {limit:,.0f} ms" for o, limit in self.limits()]
        return ", ".join(parts) or "no latency objectives"

    def as_dict(self) -> dict:
        return {o.key: getattr(self, o.key) for o in OBJECTIVES}
