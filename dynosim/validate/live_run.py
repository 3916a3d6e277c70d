"""What a live replay leaves behind (``LiveRun``): per-request rows and the measured summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dynosim.config import RunConfig
from dynosim.engines.live.client import CompletionResult
from dynosim.metrics.collector import requests_frame, summarize
from dynosim.request import Request, RequestStatus


@dataclass
class LiveRun:
    """What a live replay leaves behind."""

    requests: list[Request]
    results: dict[int, CompletionResult]
    config: RunConfig
    urls: list[str]
    wall_s: float
    not_sent: int
    aborted: str | None
    engine_deltas: list[dict[str, float]]
    kv_event_stats: list[dict] = field(default_factory=list)
    max_clock_lag_ms: float = 0.0
    send_lag_ms: list[float] = field(default_factory=list)
    decode_urls: list[str] = field(default_factory=list)   # disaggregated: the decode pool (urls = prefill)
    decode_worker: dict[int, int] = field(default_factory=dict)
    prefill_results: dict[int, CompletionResult] = field(default_factory=dict)
    scheduled: dict[int, float] = field(default_factory=dict)  # trace arrival, where arrival_ms is the send time
    warmup: dict = field(default_factory=dict)                 # disaggregated: hand-offs before the clock started

    def frame(self) -> pd.DataFrame:
        df = requests_frame(self.requests)
        err = [None if (res := self.results.get(r.rid)) is None else res.error for r in self.requests]
        df["error"] = err
        df["scheduled_ms"] = [self.scheduled.get(r.rid, r.arrival) for r in self.requests]
        df["cached_tokens_reported"] = [
            None if (res := self.results.get(r.rid)) is None else res.cached_tokens for r in self.requests]
        if self.decode_urls:
            df["decode_worker"] = [self.decode_worker.get(r.rid, -1) for r in self.requests]
            df["prefill_ms"] = [(p.t_end_ms - p.t_send_ms) if (p := self.prefill_results.get(r.rid)) is not None
                                and p.ok else np.nan for r in self.requests]
        return df

    def token_gaps(self) -> np.ndarray:
        gaps = [np.diff(np.asarray(res.per_token_times_ms(), float))
                for res in self.results.values() if res.ok and len(res.token_times_ms) > 1]
        return np.concatenate(gaps) if gaps else np.zeros(0)

    def summary(self) -> dict:
        df = requests_frame(self.requests)
        gaps = self.token_gaps()
        slo = self.config.slo
        preemptions = sum(d.get("preemptions", 0.0) for d in self.engine_deltas)   # as the engines counted
        s = summarize(df, gaps, np.ones(len(gaps), dtype=np.int64), self.config.num_gpus,
                      slo_ttft_ms=slo.ttft_ms, slo_itl_ms=slo.itl_ms, slo_e2e_ms=slo.e2e_ms, preemptions=preemptions)
        s["requests"]["not_sent"] = self.not_sent
        s["requests"]["total"] += self.not_sent
        s["aborted"] = self.aborted
        s["failure_reasons"] = failure_reasons(self.requests)
        s["complete"] = measured_is_complete(s)
        hits = sum(d.get("prefix_cache_hits", 0.0) for d in self.engine_deltas)
        queries = sum(d.get("prefix_cache_queries", 0.0) for d in self.engine_deltas)
        s["engine_counters"] = {"prefix_cache_hits": hits, "prefix_cache_queries": queries,
                                "preemptions": preemptions,
                                "per_worker": self.engine_deltas}
        per_request = not df.empty and all(
            res.cached_tokens is not None for res in self.results.values() if res.ok)
        if queries > 0 and not per_request:
            # engines that do not report cached tokens per request: reuse from their own counters
            s["prefix_reuse_ratio"] = hits / queries
        s["prefix_reuse_source"] = "per-request usage" if per_request else (
            "engine counters" if queries > 0 else "unavailable")
        s["kv_events"] = self.kv_event_stats
        if self.decode_urls:
            pre = [p.t_end_ms - p.t_send_ms for p in self.prefill_results.values() if p.ok]
            s["disaggregated"] = {"prefill_workers": len(self.urls), "decode_workers": len(self.decode_urls),
                                  "prefill_handoff_ms_p50": float(np.median(pre)) if pre else float("nan"),
                                  "handoffs": len(pre)}
        s["live"] = {"warmup": self.warmup, "wall_s": self.wall_s, "urls": self.urls + self.decode_urls,
                     "max_clock_lag_ms": self.max_clock_lag_ms,
                     "send_lag_ms_p99": float(np.percentile(self.send_lag_ms, 99)) if self.send_lag_ms else 0.0}
        return s


def failure_reasons(requests: list[Request], limit: int = 10) -> dict[str, int]:
    """Distinct reasons requests failed, most frequent first, so a lost request is never a bare count."""
    counts: dict[str, int] = {}
    for r in requests:
        if r.status is RequestStatus.FAILED:
            reason = (r.failure or "").strip().splitlines()[0][:300] if (r.failure or "").strip() else "unknown"
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:limit])


def measured_is_complete(summary: dict) -> bool:
    r = summary["requests"]
    return r["failed"] == 0 and r["unfinished"] == 0 and r.get("not_sent", 0) == 0 and not summary.get("aborted")
