"""Per-request records and the run summary (aiperf / Dynamo definitions).

TTFT = first token − arrival; E2E = last token − arrival; ITL per request =
(E2E − TTFT)/(n − 1) (aiperf; Dynamo's report calls it TPOT); tokens/s/user =
1000/ITL; token gaps = every consecutive inter-token gap pooled over all
requests (Dynamo's "ITL" distribution). Throughputs divide totals by the span
from the first arrival to the last token. Prefix reuse = prompt tokens served
from the prefix cache (best admission; also reported at first admission) /
prompt tokens, over completed requests.

The summary is the one schema of simulated and measured runs; the figures compared across runs (a sweep
row's columns, regress, validate) are named, located in it, labelled and given a direction in
``dynosim.metrics.catalog``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynosim.metrics.stats import distribution
from dynosim.request import Request

REQUEST_COLUMNS = [
    "request_id", "session_id", "turn", "line", "worker", "status", "failure", "arrival_ms", "first_token_ms",
    "last_token_ms", "input_tokens", "output_tokens", "reused_tokens", "first_reused_tokens", "ttft_ms", "e2e_ms", "itl_ms",
    "tps_user", "preemptions",
]


def requests_frame(requests: list[Request]) -> pd.DataFrame:
    n = len(requests)
    arrival = np.fromiter((r.arrival for r in requests), float, n)
    first = np.fromiter((r.first_token for r in requests), float, n)
    last = np.fromiter((r.last_token for r in requests), float, n)
    out = np.fromiter((r.generated for r in requests), np.int64, n)
    ttft = first - arrival
    e2e = last - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        itl = np.where(out > 1, (e2e - ttft) / np.maximum(out - 1, 1), np.nan)
        tps = np.where(itl > 0, 1000.0 / itl, np.nan)
    return pd.DataFrame({
        "request_id": np.fromiter((r.rid for r in requests), np.int64, n),
        "session_id": [r.session for r in requests],
        "turn": np.fromiter((r.turn for r in requests), np.int64, n),
        "line": np.fromiter((r.line for r in requests), np.int64, n),
        "worker": np.fromiter((r.worker for r in requests), np.int64, n),
        "status": pd.Series([r.status.value for r in requests], dtype="str"),  # str-typed even when empty
        "failure": pd.Series([r.failure or "" for r in requests], dtype="str"),
        "arrival_ms": arrival,
        "first_token_ms": first,
        "last_token_ms": last,
        "input_tokens": np.fromiter((r.isl for r in requests), np.int64, n),
        "output_tokens": out,
        "reused_tokens": np.fromiter((r.reused for r in requests), np.int64, n),
        "first_reused_tokens": np.fromiter((r.first_reused for r in requests), np.int64, n),
        "ttft_ms": ttft,
        "e2e_ms": e2e,
        "itl_ms": itl,
        "tps_user": tps,
        "preemptions": np.fromiter((r.preemptions for r in requests), np.int64, n),
    }, columns=REQUEST_COLUMNS)


def summarize(df: pd.DataFrame, gap_values, gap_counts, num_gpus: int, *, gpu_seconds: float | None = None,
              slo_ttft_ms: float | None = None, slo_itl_ms: float | None = None,
              slo_e2e_ms: float | None = None, preemptions: int | None = None) -> dict:
    """The run's summary. ``gpu_seconds``: GPUs held integrated over the run when the deployment scaled
    (per-GPU throughput is then time-weighted); the SLOs give goodput (requests meeting every given objective
    per second). ``preemptions``: as the engines counted them (a disaggregated prefill worker preempts
    requests the frame never shows); default, the frame's per-request counts."""
    done = df[df["status"] == "done"]
    failed = df[df["status"] == "failed"]
    start = float(df["arrival_ms"].min()) if len(df) else 0.0
    end = float(done["last_token_ms"].max()) if len(done) else start
    span_s = max(end - start, 0.0) / 1000.0
    out_tokens = int(done["output_tokens"].sum())
    in_tokens = int(done["input_tokens"].sum())
    rate = (lambda x: x / span_s) if span_s > 0 else (lambda x: float("nan"))
    multi = done[done["output_tokens"] > 1]
    if gpu_seconds is None:
        gpu_seconds = num_gpus * span_s
    per_gpu = out_tokens / gpu_seconds if gpu_seconds > 0 else float("nan")
    out = {
        "requests": {"total": int(len(df)), "completed": int(len(done)), "failed": int(len(failed)),
                     "unfinished": int(len(df) - len(done) - len(failed))},
        "duration_s": span_s,
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "throughput": {
            "requests_per_s": rate(len(done)),
            "input_tokens_per_s": rate(in_tokens),
            "output_tokens_per_s": rate(out_tokens),
            "total_tokens_per_s": rate(in_tokens + out_tokens),
            "output_tokens_per_s_per_gpu": per_gpu,
        },
        "num_gpus": num_gpus,
        "gpu_seconds": gpu_seconds,
        "mean_gpus": gpu_seconds / span_s if span_s > 0 else float(num_gpus),
        "prefix_reuse_ratio": float(done["reused_tokens"].sum() / in_tokens) if in_tokens else 0.0,
        "first_admission_prefix_reuse_ratio":
            float(done["first_reused_tokens"].sum() / in_tokens) if in_tokens else 0.0,
        "preemptions": int(df["preemptions"].sum()) if preemptions is None else int(preemptions),
        "ttft_ms": distribution(done["ttft_ms"].to_numpy()),
        "e2e_ms": distribution(done["e2e_ms"].to_numpy()),
        "itl_ms": distribution(multi["itl_ms"].to_numpy()),
        "tps_user": distribution(multi["tps_user"].to_numpy()),
        "token_gap_ms": distribution(gap_values, gap_counts),
    }
    out["goodput"] = goodput(df, span_s, slo_ttft_ms, slo_itl_ms, slo_e2e_ms)
    return out


def goodput(df: pd.DataFrame, span_s: float, ttft_ms: float | None, itl_ms: float | None,
            e2e_ms: float | None = None) -> dict:
    """Requests that completed within every given objective (None: not an objective; ITL counts for
    multi-token outputs only). With no objective at all every completed request counts.

    ``attainment`` is their share of all requests (failed and unfinished ones miss).
    """
    done = df[df["status"] == "done"]
    ok = np.ones(len(done), bool)
    if ttft_ms is not None:
        ok &= done["ttft_ms"].to_numpy() <= ttft_ms
    if itl_ms is not None:
        itl = done["itl_ms"].to_numpy()
        ok &= np.isnan(itl) | (itl <= itl_ms)
    if e2e_ms is not None:
        ok &= done["e2e_ms"].to_numpy() <= e2e_ms
    n_ok = int(ok.sum())
    return {"slo_ttft_ms": ttft_ms, "slo_itl_ms": itl_ms, "slo_e2e_ms": e2e_ms, "requests": n_ok,
            "requests_per_s": n_ok / span_s if span_s > 0 else float("nan"),
            "attainment": n_ok / len(df) if len(df) else float("nan"),
            "output_tokens_per_s": float(done["output_tokens"].to_numpy()[ok].sum()) / span_s
            if span_s > 0 else float("nan")}
