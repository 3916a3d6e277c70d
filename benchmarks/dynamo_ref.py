#!/usr/bin/env python3
"""Reference runner: NVIDIA Dynamo's own offline trace replay.

Runs ``dynamo.replay.run_trace_replay`` once on a Mooncake JSONL trace so our
benchmarks can compare dynosim against the upstream simulator. This script is
standalone (stdlib + dynamo) and must be executed with the Python of the venv
that has Dynamo installed, e.g.::

    /work/dynvenv/bin/python benchmarks/dynamo_ref.py \
        --trace /work/shared/traces/conversation_trace.jsonl \
        --num-workers 16 --router-mode round_robin --out result.json

It prints exactly ONE JSON object on stdout::

    {"dynamo_version": ..., "wall_s": ..., "peak_rss_mb": ...,
     "settings": {...}, "report": {...}, ...}

``report`` is Dynamo's summary dict (``ReplayReport.summary``), unchanged
except that non-finite floats become null. Everything else (Dynamo's native
logging included) goes to stderr: stdout is redirected to stderr at the file
descriptor level while Dynamo is imported and running.

Per-request records: Dynamo can return one record per request
(``capture_per_request=True``). ``--requests-out PATH`` writes them as JSONL,
sorted by trace order, with an added ``trace_index`` (0-based index of the
request among the trace's non-blank lines; see ``_attach_trace_index``).
Enabling it makes Dynamo collect the records during the replay, so ``wall_s``
then includes that collection cost (``settings.capture_per_request`` says
which was the case); writing the file happens after the timed call.

Tested against ai-dynamo 1.6.1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import sys
import time
from importlib import metadata

# Must be set before dynamo (its Rust logging) is imported.
os.environ.setdefault("DYN_LOG", "error")


def _log(msg: str) -> None:
    print(f"[dynamo_ref] {msg}", file=sys.stderr, flush=True)


def _rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS would report bytes).
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return kib / (1024 * 1024)
    return kib / 1024


def _pkg_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _jsonable(value):
    """Make Dynamo's output strict-JSON: NaN/inf -> None, tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _read_trace(path: str) -> tuple[list[dict], str]:
    records = []
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for raw in fh:
            digest.update(raw)
            line = raw.strip()
            if line:
                records.append(json.loads(line))
    return records, digest.hexdigest()


def _attach_trace_index(per_request: list[dict], trace: list[dict], speedup: float):
    """Map Dynamo's per-request records back to trace lines.

    Dynamo's records carry a random ``uuid`` and come back in no particular
    order (not trace order, not completion order), so the trace line is
    recovered by matching: records and trace entries are grouped by
    (input_length, output_length) and, within a group, paired in arrival order
    (Dynamo's ``arrival_time_ms`` is the trace ``timestamp`` divided by the
    arrival speedup). Entries that tie on timestamp inside a group are
    indistinguishable from these fields; they get ``trace_index_ambiguous:
    true`` (the pairing among them is arbitrary). Returns (records sorted by
    trace_index, stats).
    """
    groups: dict[tuple, list[tuple]] = {}
    for idx, t in enumerate(trace):
        key = (int(t["input_length"]), int(t["output_length"]))
        groups.setdefault(key, []).append((float(t["timestamp"]), idx))
    rec_groups: dict[tuple, list[dict]] = {}
    for rec in per_request:
        key = (int(rec["input_length"]), int(rec["requested_output_length"]))
        rec_groups.setdefault(key, []).append(rec)

    unmatched = 0
    ambiguous = 0
    max_err_ms = 0.0
    for key, recs in rec_groups.items():
        recs.sort(key=lambda r: (r["arrival_time_ms"] is None, r["arrival_time_ms"]))
        entries = sorted(groups.get(key, []))
        ts_count: dict[float, int] = {}
        for ts, _ in entries:
            ts_count[ts] = ts_count.get(ts, 0) + 1
        for i, rec in enumerate(recs):
            if i >= len(entries):
                rec["trace_index"] = None
                unmatched += 1
                continue
            ts, idx = entries[i]
            rec["trace_index"] = idx
            if ts_count[ts] > 1:
                rec["trace_index_ambiguous"] = True
                ambiguous += 1
            if rec["arrival_time_ms"] is not None:
                err = abs(rec["arrival_time_ms"] - ts / speedup)
                max_err_ms = max(max_err_ms, err)

    ordered = sorted(
        per_request,
        key=lambda r: (r["trace_index"] is None, r["trace_index"] or 0),
    )
    stats = {
        "records": len(per_request),
        "trace_lines": len(trace),
        "unmatched": unmatched,
        "ambiguous": ambiguous,
        "max_arrival_error_ms": max_err_ms,
    }
    return ordered, stats


def _engine_args(args, worker_type: str | None) -> dict:
    engine = {
        "block_size": args.block_size,
        "num_gpu_blocks": args.num_gpu_blocks,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
    }
    if worker_type is not None:
        engine["worker_type"] = worker_type
    if args.kv_transfer_bandwidth is not None:
        engine["kv_transfer_bandwidth"] = args.kv_transfer_bandwidth
    if args.kv_bytes_per_token is not None:
        engine["kv_transfer_bytes_per_token"] = args.kv_bytes_per_token
    if args.aic_nextn:
        # speculative decoding (MTP bursts); Dynamo takes the rates as a comma-separated string
        engine["aic_nextn"] = args.aic_nextn
        if args.aic_nextn_accept_rates is not None:
            engine["aic_nextn_accept_rates"] = args.aic_nextn_accept_rates
        if args.aic_mtp_seed is not None:
            engine["aic_mtp_seed"] = args.aic_mtp_seed
    if args.ais_model is not None:
        # passes priced by AISimulate's database (needs aisimulate_core in this venv)
        engine["timing_model"] = {"type": "external", "provider": "ais",
                                  "config": {"model": args.ais_model, "system": args.ais_system,
                                             "backend": args.ais_backend, "tp": args.ais_tp}}
    # Dynamo 1.6.1 wants the engine knobs nested under "engine"; a flat dict
    # is rejected ("unknown field `block_size`").
    return {"engine": engine}


def _resolved(engine_args: dict):
    """Dynamo's fully defaulted engine config (private helper; best effort)."""
    try:
        from dynamo._core import _normalize_mocker_config

        return _normalize_mocker_config(engine_args)
    except Exception as exc:  # pragma: no cover - depends on Dynamo internals
        return {"error": repr(exc)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Run Dynamo's offline trace replay once and print one JSON object."
    )
    p.add_argument("--trace", required=True, help="Mooncake JSONL trace")
    p.add_argument("--num-workers", type=int, default=16,
                   help="aggregated workers (ignored in disaggregated mode)")
    p.add_argument("--router-mode", choices=("round_robin", "kv_router"),
                   default="round_robin")
    p.add_argument("--block-size", type=int, default=64, help="engine KV block size (tokens)")
    p.add_argument("--num-gpu-blocks", type=int, default=16384, help="KV blocks per worker")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--trace-block-size", type=int, default=512,
                   help="tokens per hash_id in the trace")
    p.add_argument("--arrival-speedup", type=float, default=1.0,
                   help="arrival_speedup_ratio: trace timestamps are divided by this")
    p.add_argument("--num-prefill-workers", type=int, default=None,
                   help="disaggregated mode (give with --num-decode-workers)")
    p.add_argument("--num-decode-workers", type=int, default=None,
                   help="disaggregated mode (give with --num-prefill-workers)")
    p.add_argument("--kv-transfer-bandwidth", type=float, default=None,
                   help="engine.kv_transfer_bandwidth, GB/s (disaggregated KV transfer; "
                        "0 disables the delay; unset = Dynamo default, none)")
    p.add_argument("--kv-bytes-per-token", type=int, default=None,
                   help="engine.kv_transfer_bytes_per_token (bytes)")
    p.add_argument("--aic-nextn", type=int, default=0,
                   help="engine.aic_nextn: speculative draft tokens per decode pass (0: off)")
    p.add_argument("--aic-nextn-accept-rates", default=None,
                   help="engine.aic_nextn_accept_rates, comma-separated (e.g. 0.85,0.3)")
    p.add_argument("--aic-mtp-seed", type=int, default=None, help="engine.aic_mtp_seed (unset: Dynamo default)")
    p.add_argument("--ais-model", default=None,
                   help="price passes with AISimulate for this model (engine.timing_model provider ais)")
    p.add_argument("--ais-system", default="h200_sxm", help="AISimulate GPU system (with --ais-model)")
    p.add_argument("--ais-backend", default="vllm", help="AISimulate backend (with --ais-model)")
    p.add_argument("--ais-tp", type=int, default=1, help="AISimulate tensor parallel size (with --ais-model)")
    p.add_argument("--out", default=None, help="also write the JSON object to this file")
    p.add_argument("--requests-out", default=None,
                   help="write Dynamo's per-request records as JSONL (trace order)")
    args = p.parse_args(argv)
    if (args.num_prefill_workers is None) != (args.num_decode_workers is None):
        p.error("--num-prefill-workers and --num-decode-workers go together")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    # Keep stdout clean: the JSON goes to a private duplicate of fd 1, while
    # fd 1 itself (Python prints and any native writes) points at stderr.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    t_import = time.perf_counter()
    import dynamo.replay
    from dynamo.replay import run_trace_replay

    import_s = time.perf_counter() - t_import

    disagg = args.num_prefill_workers is not None
    kwargs = dict(
        router_mode=args.router_mode,
        arrival_speedup_ratio=args.arrival_speedup,
        trace_block_size=args.trace_block_size,
        trace_format="mooncake",
        replay_mode="offline",
        capture_per_request=args.requests_out is not None,
        capture_planner_details=False,
    )
    if disagg:
        kwargs.update(
            prefill_engine_args=_engine_args(args, "prefill"),
            decode_engine_args=_engine_args(args, "decode"),
            num_prefill_workers=args.num_prefill_workers,
            num_decode_workers=args.num_decode_workers,
        )
        resolved = {
            "prefill": _resolved(kwargs["prefill_engine_args"]),
            "decode": _resolved(kwargs["decode_engine_args"]),
        }
    else:
        kwargs.update(
            extra_engine_args=_engine_args(args, None),
            num_workers=args.num_workers,
        )
        resolved = {"aggregated": _resolved(kwargs["extra_engine_args"])}

    trace = None
    trace_sha = None
    if args.requests_out is not None:
        trace, trace_sha = _read_trace(args.trace)

    rss_before = _rss_mb()
    _log(f"replaying {args.trace} ({'disagg' if disagg else 'agg'}, {args.router_mode})")
    t0 = time.perf_counter()
    report = run_trace_replay(args.trace, **kwargs)
    wall_s = time.perf_counter() - t0
    peak_rss = _rss_mb()
    _log(f"done in {wall_s:.3f} s, peak RSS {peak_rss:.1f} MB")

    if trace is None:
        _, trace_sha = _read_trace(args.trace)

    call_kwargs = {k: v for k, v in kwargs.items()}
    settings = {
        "trace": os.path.abspath(args.trace),
        "trace_sha256": trace_sha,
        "mode": "disagg" if disagg else "agg",
        "num_workers": None if disagg else args.num_workers,
        "num_prefill_workers": args.num_prefill_workers,
        "num_decode_workers": args.num_decode_workers,
        "router_mode": args.router_mode,
        "block_size": args.block_size,
        "num_gpu_blocks": args.num_gpu_blocks,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "trace_block_size": args.trace_block_size,
        "arrival_speedup": args.arrival_speedup,
        "kv_transfer_bandwidth": args.kv_transfer_bandwidth,
        "kv_bytes_per_token": args.kv_bytes_per_token,
        "aic_nextn": args.aic_nextn,
        "aic_nextn_accept_rates": args.aic_nextn_accept_rates,
        "aic_mtp_seed": args.aic_mtp_seed,
        "ais_model": args.ais_model,
        "capture_per_request": args.requests_out is not None,
        "run_trace_replay_kwargs": call_kwargs,
        "resolved_engine_config": resolved,
        "dyn_log": os.environ.get("DYN_LOG"),
        "python": sys.executable,
        "ai_dynamo_runtime_version": _pkg_version("ai-dynamo-runtime"),
    }

    result = {
        "dynamo_version": _pkg_version("ai-dynamo")
        or getattr(getattr(dynamo.replay, "_version", None), "__version__", None),
        "wall_s": wall_s,
        "peak_rss_mb": peak_rss,
        "rss_mb_before_replay": rss_before,
        "import_s": import_s,
        "settings": settings,
        "report": report.summary,
        "report_coverage": report.coverage,
    }

    if args.requests_out is not None:
        per_request = report.per_request or []
        ordered, stats = _attach_trace_index(per_request, trace, args.arrival_speedup)
        with open(args.requests_out, "w") as fh:
            for rec in ordered:
                fh.write(json.dumps(_jsonable(rec), separators=(",", ":")) + "\n")
        result["requests_out"] = {"path": os.path.abspath(args.requests_out), **stats}
        if stats["unmatched"] or stats["records"] != stats["trace_lines"]:
            _log(f"WARNING: per-request matching: {stats}")

    text = json.dumps(_jsonable(result), indent=1, allow_nan=False)
    if args.out is not None:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    json_out.write(text + "\n")
    json_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
