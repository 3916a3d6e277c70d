"""The metric catalogue: every figure a sweep row, a regression check or a validation compares, defined once.

An entry names a figure by its flat key (a sweep row's column, e.g. ``ttft_p90``), says where it lives in a run's
summary (``("ttft_ms", "p90")``; simulated and live summaries share one schema, see ``collector.summarize``), its
unit, how a person reads it, and which way is better. The tables that show figures read them from here:

- ``SWEEP_ROW``: the columns of a sweep row, in order (``flat_row``); ``AGGREGATED``: the ones a sweep averages
  over seeds (``sweeps.pareto``);
- ``REGRESS_DEFAULT``: what ``dynosim regress`` compares when its spec names nothing; any figure with a direction
  may be named;
- ``VALIDATED``: what ``dynosim validate`` compares, in its table's order; ``VALIDATE_GATE``: the ones that decide
  its exit status by default.

A figure with no direction (``num_gpus``, ``duration_s``) describes a run rather than judges it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Metric:
    key: str                         # flat key: a sweep row's column
    path: tuple[str, ...]            # where it lives in a run's summary
    label: str                       # how a person reads it, without its unit
    unit: str = ""                   # "ms", "req/s"; "" when the label says it (tokens/s) or it has none (a ratio)
    direction: Direction | None = None   # which way is better; None: not a judgement (num_gpus, duration_s)
    decimals: int = 3                # digits a table shows
    absolute: bool = False           # a ratio: compared by absolute difference, not relative error
    short: str | None = None         # a shorter label where space is tight (a hover, a table head)
    head: str | None = None          # a table's column head, when not the short label and the unit

    @property
    def regress_default(self) -> bool:
        return self.key in REGRESS_DEFAULT

    @property
    def validate_gate(self) -> bool:
        return self.key in VALIDATE_GATE

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def column_head(self) -> str:
        return self.head or f"{self.short or self.label} {self.unit}".strip()

    def value(self, summary: dict) -> Any:
        """The figure in ``summary`` (KeyError when the summary lacks it)."""
        v: Any = summary
        for part in self.path:
            v = v[part]
        return v


_M = Metric
CATALOG: tuple[Metric, ...] = (
    _M("output_tps_per_gpu", ("throughput", "output_tokens_per_s_per_gpu"), "output tokens/s/GPU", "", "higher", 1,
       short="tokens/s/GPU"),
    _M("output_tps", ("throughput", "output_tokens_per_s"), "output tokens/s", "", "higher", 1),
    _M("requests_per_s", ("throughput", "requests_per_s"), "requests/s", "", "higher", 3),
    _M("tps_user_mean", ("tps_user", "mean"), "tokens/s/user (mean)", "", "higher", 1, head="tokens/s/user"),
    _M("tps_user_p50", ("tps_user", "p50"), "tokens/s/user (p50)", "", "higher", 1),
    _M("ttft_p50", ("ttft_ms", "p50"), "TTFT p50", "ms", "lower", 0),
    _M("ttft_p90", ("ttft_ms", "p90"), "TTFT p90", "ms", "lower", 0),
    _M("ttft_p99", ("ttft_ms", "p99"), "TTFT p99", "ms", "lower", 0),
    _M("ttft_mean", ("ttft_ms", "mean"), "TTFT mean", "ms", "lower", 0),
    _M("itl_mean", ("itl_ms", "mean"), "ITL mean", "ms", "lower", 2),
    _M("itl_p50", ("itl_ms", "p50"), "ITL p50", "ms", "lower", 2),
    _M("itl_p90", ("itl_ms", "p90"), "ITL p90", "ms", "lower", 2),
    _M("e2e_p50", ("e2e_ms", "p50"), "E2E p50", "ms", "lower", 0),
    _M("e2e_p90", ("e2e_ms", "p90"), "E2E p90", "ms", "lower", 0),
    _M("goodput_rps", ("goodput", "requests_per_s"), "goodput", "req/s", "higher", 3),
    _M("slo_attainment", ("goodput", "attainment"), "SLO attainment", "", "higher", 3, head="SLO attained"),
    _M("prefix_reuse", ("prefix_reuse_ratio",), "prefix reuse ratio", "", "higher", 4, absolute=True),
    _M("preemptions", ("preemptions",), "preemptions", "", "lower", 0),
    _M("completed", ("requests", "completed"), "completed requests", "", "higher", 0),
    _M("failed", ("requests", "failed"), "failed requests", "", "lower", 0),
    _M("num_gpus", ("num_gpus",), "GPUs", "", None, 0),
    _M("duration_s", ("duration_s",), "duration", "s", None, 1),
    # compared by validate only (not sweep columns)
    _M("e2e_mean", ("e2e_ms", "mean"), "E2E mean", "ms", "lower", 0),
    _M("e2e_p99", ("e2e_ms", "p99"), "E2E p99", "ms", "lower", 0),
)
BY_KEY: dict[str, Metric] = {m.key: m for m in CATALOG}

SWEEP_ROW: tuple[str, ...] = tuple(m.key for m in CATALOG if m.key not in ("e2e_mean", "e2e_p99"))
AGGREGATED: tuple[str, ...] = ("output_tps_per_gpu", "tps_user_mean", "ttft_p50", "ttft_p90", "ttft_p99", "itl_mean",
                               "itl_p90", "e2e_p50", "e2e_p90", "goodput_rps", "slo_attainment", "output_tps",
                               "requests_per_s", "prefix_reuse", "num_gpus", "completed")
REGRESS_DEFAULT: tuple[str, ...] = ("ttft_p50", "ttft_p90", "itl_mean", "e2e_p90", "output_tps_per_gpu",
                                    "goodput_rps", "prefix_reuse", "failed")
VALIDATED: tuple[str, ...] = ("ttft_p50", "ttft_p90", "ttft_p99", "ttft_mean", "itl_mean", "itl_p50", "e2e_mean",
                              "e2e_p50", "e2e_p99", "output_tps", "requests_per_s", "prefix_reuse")
VALIDATE_GATE: tuple[str, ...] = ("ttft_p50", "itl_mean", "output_tps", "prefix_reuse")
HIGHER_IS_BETTER: frozenset[str] = frozenset(m.key for m in CATALOG if m.direction == "higher")
LOWER_IS_BETTER: frozenset[str] = frozenset(m.key for m in CATALOG if m.direction == "lower")
JUDGED: frozenset[str] = HIGHER_IS_BETTER | LOWER_IS_BETTER     # the figures regress may compare

for _view in (SWEEP_ROW, AGGREGATED, REGRESS_DEFAULT, VALIDATED, VALIDATE_GATE):
    assert set(_view) <= set(BY_KEY) and len(set(_view)) == len(_view), _view
assert set(REGRESS_DEFAULT) <= JUDGED and set(VALIDATE_GATE) <= set(VALIDATED)


def metric(key: str) -> Metric:
    """The entry for ``key``; a KeyError naming the valid keys otherwise."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; choose from {sorted(BY_KEY)}") from None


def label(key: str, unit: bool = False) -> str:
    """How a person reads ``key`` (with its unit in parentheses when ``unit``)."""
    m = metric(key)
    return m.axis_label if unit else m.label


def head(key: str) -> str:
    """``key``'s column head in a compact table (``TTFT p90 ms``)."""
    return metric(key).column_head


def direction(key: str) -> Direction | None:
    return metric(key).direction


def get(key: str, summary: dict) -> float:
    """``key``'s figure in a summary as a float; NaN when the summary lacks it or it is not a number."""
    m = metric(key)
    try:
        return float(m.value(summary))
    except (KeyError, TypeError, ValueError):
        return math.nan


def flat_row(summary: dict) -> dict[str, Any]:
    """A summary's figures a sweep compares, flat (one column each, ``SWEEP_ROW``'s order; values as stored)."""
    return {k: BY_KEY[k].value(summary) for k in SWEEP_ROW}
