"""Shared plumbing for the benchmarks: run dynosim in a child process, run Dynamo's replay.

Both sides run as separate processes so each reports its own peak RSS and
neither pays for the other's imports.

Peak RSS is each child's ``ru_maxrss`` (RUSAGE_SELF). On Linux a child that
Python starts with vfork+exec inherits the *parent's* high-water mark in that
figure, so the calling benchmark must stay small (no dynosim, numpy or pandas
import before the children have run); ``parent_rss_mb`` lets it check.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "conversation_trace.jsonl"
# dynosim router mode -> Dynamo replay router_mode (the modes Dynamo's replay has).
DYNAMO_MODES = {"round-robin": "round_robin", "kv": "kv_router"}
# dynosim's routing policies (dynosim.router.policies.POLICIES, minus "direct", which needs
# per-request worker hints); listed here so the parent process need not import dynosim.
DYNOSIM_MODES = ["round-robin", "random", "least-loaded", "power-of-two-choices", "device-aware-weighted", "kv"]

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import dynosim
from dynosim.traces import load_trace
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
c0 = time.process_time()
trace = load_trace(args["trace"], trace_block_size=512, speedup=args["arrival_speedup"])
engine = {{"block_size": args["block_size"], "num_gpu_blocks": args["num_gpu_blocks"], **(args.get("engine_extra") or {{}})}}
# the timing model (with aic: the database and its probes) is built here, inside the timed span, and reused
# by the run (one shared instance per hardware), so its set-up cost can be shown apart
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.timing import timing_for
t1 = time.perf_counter()
timing = timing_for(MockerArgs(**engine))
timing_setup_s = time.perf_counter() - t1
if args.get("disagg"):
    from dynosim.config import RunConfig
    d = args["disagg"]
    cfg = RunConfig(router_mode=args["router_mode"], seed=args["seed"], arrival_speedup=args["arrival_speedup"],
                    engine=engine, disagg={{"prefill_workers": d["prefill_workers"], "decode_workers": d["decode_workers"],
                                           "transfer": {{"model": d["model"], "link": None,
                                                        "bandwidth_gbps": d["bandwidth_gbps"], "latency_ms": 0.0}}}})
    res = dynosim.run(trace, config=cfg)
else:
    res = dynosim.run(trace, workers=args["workers"], router_mode=args["router_mode"], seed=args["seed"],
                      arrival_speedup=args["arrival_speedup"], engine=engine)
wall = time.perf_counter() - t0
cpu = time.process_time() - c0
out = {{"wall_s": wall, "cpu_s": cpu, "sim_wall_s": res.summary["run"]["sim_wall_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "summary": res.summary, "timing_setup_s": timing_setup_s,
        "timing_stats": {{"queries": getattr(timing, "queries", None), "decode_tables": len(getattr(timing, "_tables", ())),
                          "memo": len(getattr(timing, "_memo", ()))}}}}
if args.get("requests_out"):
    res.requests.to_parquet(args["requests_out"], index=False)
print(json.dumps(out))
"""


def run_dynosim(trace: str, workers: int, router_mode: str, *, block_size: int = 64, num_gpu_blocks: int = 16384,
                arrival_speedup: float = 1.0, seed: int = 0, requests_out: str | None = None,
                disagg: dict | None = None, engine_extra: dict | None = None) -> dict:
    """Replay in a fresh interpreter; wall_s covers trace loading, timing-model set-up, simulation and summary.

    ``disagg``: {prefill_workers, decode_workers, bandwidth_gbps, model} for a disaggregated replay.
    ``engine_extra``: more ``MockerArgs`` fields (hardware, timing, nextn, nextn_accept_rates, mtp_seed).
    ``cpu_s`` is the same span's CPU time (this process), steadier than wall time on a shared machine.
    The result also has ``timing_setup_s`` (building the timing model, inside wall_s) and ``timing_stats``
    (aic: database queries, decode tables and memoised passes of this run).
    """
    args = dict(trace=str(trace), workers=workers, router_mode=router_mode, block_size=block_size,
                num_gpu_blocks=num_gpu_blocks, arrival_speedup=arrival_speedup, seed=seed,
                requests_out=requests_out, disagg=disagg, engine_extra=engine_extra)
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT)), json.dumps(args)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dynosim child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kv_blocks_from_memory(hardware: dict, block_size: int = 64, max_num_batched_tokens: int = 8192,
                          max_num_seqs: int = 256) -> int:
    """KV blocks per worker that dynosim sizes from memory for ``hardware`` (in a child: the caller stays small)."""
    code = ("import json, sys; sys.path.insert(0, {root!r}); from dynosim.engines.mocker.config import MockerArgs; "
            "a = MockerArgs(**json.loads(sys.argv[1])); print(a.num_gpu_blocks, a.kv_blocks_source)").format(
                root=str(ROOT))
    args = dict(hardware=hardware, block_size=block_size, max_num_batched_tokens=max_num_batched_tokens,
                max_num_seqs=max_num_seqs)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sizing the KV cache failed:\n{proc.stderr[-3000:]}")
    blocks, source = proc.stdout.split()
    if source != "memory":
        raise RuntimeError(f"expected a memory-sized KV cache, got {source}")
    return int(blocks)


def dynamo_has_ais(python: str) -> bool:
    """Whether Dynamo's replay in that venv can price passes with AISimulate (``timing_model`` provider ais)."""
    probe = subprocess.run([python, "-c", "import importlib.util as u, sys; "
                            "sys.exit(0 if u.find_spec('aisimulate_core') else 3)"], capture_output=True, text=True)
    return probe.returncode == 0


def parent_rss_mb() -> float:
    """This process's own peak RSS (MB): a floor under every child's reported peak RSS."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def find_dynamo_python(explicit: str | None) -> tuple[str | None, str]:
    """(python, how it was found) for a venv with ai-dynamo, or (None, why not).

    Looks at ``explicit`` (--dynamo-python) if given, else $DYNOSIM_DYNAMO_PYTHON,
    else /work/dynvenv/bin/python if it exists; the interpreter must be able to
    find ``dynamo.replay``.
    """
    if explicit:
        cands = [(explicit, "--dynamo-python")]
    elif os.environ.get("DYNOSIM_DYNAMO_PYTHON"):
        cands = [(os.environ["DYNOSIM_DYNAMO_PYTHON"], "$DYNOSIM_DYNAMO_PYTHON")]
    else:
        cands = [("/work/dynvenv/bin/python", "default path")]
    cand, source = cands[0]
    if not Path(cand).exists():
        return None, f"{cand} ({source}) does not exist"
    probe = subprocess.run([cand, "-c", "import importlib.util as u, sys; "
                            "sys.exit(0 if u.find_spec('dynamo') and u.find_spec('dynamo.replay') else 3)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"{cand} ({source}) cannot import dynamo.replay"
    return cand, f"{cand} ({source})"


def run_dynamo(python: str, trace: str, workers: int, router_mode: str, *, block_size: int = 64,
               num_gpu_blocks: int = 16384, arrival_speedup: float = 1.0,
               requests_out: str | None = None, disagg: dict | None = None, nextn: int = 0,
               nextn_accept_rates: list[float] | None = None, mtp_seed: int | None = None,
               ais: dict | None = None) -> dict:
    """Dynamo's replay via benchmarks/dynamo_ref.py.

    ``nextn`` / ``nextn_accept_rates`` / ``mtp_seed``: the engine's aic_nextn, aic_nextn_accept_rates (sent
    as Dynamo's comma-separated string) and aic_mtp_seed. ``ais``: {model, system, tp, backend} to price
    passes with AISimulate (engine.timing_model provider ais; needs aisimulate_core in that venv).
    """
    if router_mode not in DYNAMO_MODES:
        raise ValueError(f"Dynamo's replay has no equivalent of router mode {router_mode!r}")
    cmd = [python, str(ROOT / "benchmarks" / "dynamo_ref.py"), "--trace", str(trace),
           "--num-workers", str(workers), "--router-mode", DYNAMO_MODES[router_mode],
           "--block-size", str(block_size), "--num-gpu-blocks", str(num_gpu_blocks),
           "--arrival-speedup", str(arrival_speedup)]
    if requests_out:
        cmd += ["--requests-out", requests_out]
    if disagg:
        cmd += ["--num-prefill-workers", str(disagg["prefill_workers"]), "--num-decode-workers",
                str(disagg["decode_workers"]), "--kv-transfer-bandwidth", str(disagg["bandwidth_gbps"]),
                "--kv-bytes-per-token", str(disagg["bytes_per_token"])]
    if nextn:
        cmd += ["--aic-nextn", str(nextn)]
        if nextn_accept_rates is not None:
            cmd += ["--aic-nextn-accept-rates", ",".join(repr(float(r)) for r in nextn_accept_rates)]
        if mtp_seed is not None:
            cmd += ["--aic-mtp-seed", str(mtp_seed)]
    if ais:
        cmd += ["--ais-model", ais["model"], "--ais-system", ais["system"], "--ais-tp", str(ais.get("tp", 1)),
                "--ais-backend", ais.get("backend", "vllm")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DYN_LOG": "error"})
    if proc.returncode != 0:
        raise RuntimeError(f"Dynamo reference run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)
