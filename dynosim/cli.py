"""Command line: thin wrappers that parse, call the library, print and save."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from dynosim import __version__
from dynosim.api import RunResult, run as run_api
from dynosim.config import DisaggConfig, RouterParams, RunConfig
from dynosim.disagg.transfer import TransferConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.timing import TIMING_MODELS
from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.router.policies import POLICIES
from dynosim.traces.inspect import format_inspection, inspect_trace
from dynosim.traces.mooncake import TraceError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="dynosim: replay LLM request traces through a simulated Dynamo-style serving stack.")
trace_app = typer.Typer(no_args_is_help=True, help="Look at and transform traces.")
app.add_typer(trace_app, name="trace")
console = Console()
err_console = Console(stderr=True)

RouterMode = Enum("RouterMode", {k.replace("-", "_"): k for k in POLICIES}, type=str)  # type: ignore[misc]
TimingName = Enum("TimingName", {k: k for k in TIMING_MODELS}, type=str)  # type: ignore[misc]


class Preemption(str, Enum):
    lifo = "lifo"
    fifo = "fifo"


def _fail(msg: str) -> None:
    err_console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        parts.append(f"{loc}: {e['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def _parse_options(items: list[str]) -> dict:
    """KEY=VALUE strings to a dict, values parsed as JSON when they parse (numbers, booleans)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--router-option")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _fmt(x: float, nd: int = 2) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:,.{nd}f}"


def summary_table(res: RunResult) -> Table:
    s = res.summary
    d = res.config.disagg
    pools = f"{d.prefill_workers}P+{d.decode_workers}D" if d is not None else f"{res.config.workers} workers"
    t = Table(title=f"dynosim run: {s['requests']['completed']}/{s['requests']['total']} requests, "
                    f"{pools}{' (start; planner on)' if res.config.planner else ''}, router {res.config.router_mode}")
    t.add_column("metric")
    for col in ("mean", "p50", "p90", "p95", "p99", "std"):
        t.add_column(col, justify="right")
    names = {"ttft_ms": "TTFT (ms)", "itl_ms": "ITL per request (ms)", "token_gap_ms": "token gap (ms)",
             "e2e_ms": "E2E (ms)", "tps_user": "tokens/s/user"}
    for key, label in names.items():
        d = s[key]
        t.add_row(label, *(_fmt(d[c]) for c in ("mean", "p50", "p90", "p95", "p99", "std")))
    return t


def totals_table(res: RunResult) -> Table:
    s = res.summary
    th = s["throughput"]
    t = Table(show_header=False, title="throughput and cache")
    t.add_column("k")
    t.add_column("v", justify="right")
    rows = [
        ("simulated duration (s)", _fmt(s["duration_s"], 1)),
        ("requests/s", _fmt(th["requests_per_s"], 3)),
        ("output tokens/s", _fmt(th["output_tokens_per_s"], 1)),
        ("output tokens/s/GPU", _fmt(th["output_tokens_per_s_per_gpu"], 1)),
        ("input tokens/s", _fmt(th["input_tokens_per_s"], 1)),
        ("GPU-seconds (mean GPUs)", f"{_fmt(s['gpu_seconds'], 0)} ({_fmt(s['mean_gpus'], 2)})"),
        (f"goodput req/s (TTFT ≤ {s['goodput']['slo_ttft_ms']:g} ms, ITL ≤ {s['goodput']['slo_itl_ms']:g} ms)",
         f"{_fmt(s['goodput']['requests_per_s'], 3)} ({_fmt(100 * s['goodput']['attainment'], 1)}% attained)"),
        ("prefix reuse ratio", _fmt(s["prefix_reuse_ratio"], 4)),
        ("preemptions", str(s["preemptions"])),
        ("failed requests", str(s["requests"]["failed"])),
        ("wall time (s)", _fmt(s["run"]["wall_s"], 2)),
        ("× real time", _fmt(s["run"]["x_realtime"], 0)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


def replicas_table(res: RunResult, max_rows: int = 40) -> Table:
    """The planner's replica timeline (changes only; long timelines show their first and last rows)."""
    tl = res.replicas
    t = Table(title=f"planner: replica timeline ({len(tl)} changes; peak {res.summary['planner']['peak_gpus']} GPUs)")
    for c in ("time (s)", "pool", "target", "starting", "ready", "draining", "GPUs", "why"):
        t.add_column(c, justify="left" if c in ("pool", "why") else "right")
    rows = list(tl.itertuples(index=False))
    if len(rows) > max_rows:
        rows = rows[: max_rows // 2] + [None] + rows[-max_rows // 2:]
    for r in rows:
        if r is None:
            t.add_row("…", "", "", "", "", "", "", "")
            continue
        t.add_row(_fmt(r.time_s, 1), r.pool, str(r.target), str(r.starting), str(r.ready), str(r.draining),
                  str(r.gpus), r.reason)
    return t


@app.command()
def run(
    trace: Path = typer.Option(..., "--trace", "-t", help="Mooncake-style JSONL trace"),
    workers: int = typer.Option(1, "--workers", "-w", help="aggregated engine workers"),
    prefill_workers: int = typer.Option(0, help="disaggregated: prefill workers (with --decode-workers)"),
    decode_workers: int = typer.Option(0, help="disaggregated: decode workers"),
    kv_transfer_link: str = typer.Option("rdma", help="disaggregated KV hand-off link preset: nvlink, rdma, tcp"),
    kv_transfer_bandwidth: Optional[float] = typer.Option(None, help="hand-off bandwidth in GB/s (overrides "
                                                          "the preset)"),
    kv_transfer_latency_ms: Optional[float] = typer.Option(None, help="hand-off latency (overrides the preset)"),
    kv_model: str = typer.Option("llama-3.1-8b", help="KV shape preset for bytes per token"),
    kv_transfer_contention: bool = typer.Option(False, "--kv-transfer-contention/--no-kv-transfer-contention",
                                                help="hand-offs queue on one shared link"),
    router_mode: RouterMode = typer.Option("round-robin", "--router-mode", help="routing policy"),
    num_gpu_blocks: int = typer.Option(16384, help="KV capacity per worker, in blocks"),
    block_size: int = typer.Option(64, help="tokens per KV block"),
    max_num_seqs: int = typer.Option(256, help="cap on running requests per worker"),
    max_num_batched_tokens: int = typer.Option(8192, help="token budget of one scheduler pass"),
    timing: TimingName = typer.Option("polynomial", help="timing model"),
    timing_profile: Optional[str] = typer.Option(None, help="profile file or bundled name (interpolated)"),
    speedup_ratio: float = typer.Option(1.0, help="divide all modelled durations by this"),
    prefix_caching: bool = typer.Option(True, "--prefix-caching/--no-prefix-caching"),
    chunked_prefill: bool = typer.Option(True, "--chunked-prefill/--no-chunked-prefill"),
    preemption_mode: Preemption = typer.Option("lifo", help="which running request is preempted"),
    gpus_per_worker: int = typer.Option(1, help="GPUs per worker (TP), for per-GPU throughput"),
    trace_block_size: int = typer.Option(512, help="tokens per trace hash_id"),
    arrival_speedup: float = typer.Option(1.0, help="divide arrival times and session delays by this"),
    concurrency: Optional[int] = typer.Option(None, help="closed loop: keep N sessions open (the next starts when "
                                              "one ends), ignoring the trace's timestamps"),
    limit: Optional[int] = typer.Option(None, help="replay only the first N trace rows"),
    router_temperature: float = typer.Option(0.0, help="KV router: 0 = argmin, >0 = softmax sampling"),
    kv_overlap_score_credit: float = typer.Option(1.0, help="KV router: credit per cached prefix block (0..1)"),
    router_prefill_load_scale: float = typer.Option(1.0, help="KV router: weight of the prefill term"),
    router_kv_events: bool = typer.Option(True, "--router-kv-events/--no-router-kv-events",
                                          help="KV router: indexer from engine events, or approximate "
                                               "from its own decisions (TTL)"),
    router_ttl: float = typer.Option(120.0, help="approximate KV router: seconds a decision is remembered"),
    router_tie_break: str = typer.Option("random", help="KV router exact ties: random | tree-size"),
    router_queue_threshold: Optional[float] = typer.Option(
        None, help="queue requests while every worker has more than this × max_num_batched_tokens "
                   "of pending prefill (off by default)"),
    router_queue_policy: str = typer.Option("fcfs", help="router queue order: fcfs | lcfs | wspt"),
    device_types: Optional[str] = typer.Option(None, help="device-aware-weighted: comma list of cpu/cuda "
                                                          "per worker"),
    router_option: list[str] = typer.Option([], "--router-option",
                                            help="policy option KEY=VALUE (repeatable), e.g. variant=generalized"),
    seed: int = typer.Option(0, help="random seed (random router, tie-breaks)"),
    slo_ttft_ms: float = typer.Option(500.0, help="TTFT objective: goodput and the planner's SLA target"),
    slo_itl_ms: float = typer.Option(50.0, help="ITL objective: goodput and the planner's SLA target"),
    planner: bool = typer.Option(False, "--planner/--no-planner", help="autoscale the pools with the planner "
                                 "(the workers given are the starting deployment)"),
    planner_target: str = typer.Option("sla", help="planner optimization target: sla | throughput | latency"),
    planner_predictor: str = typer.Option("arima", help="planner load predictor: constant | moving-average | "
                                          "kalman | arima"),
    planner_gpu_budget: int = typer.Option(16, help="planner: GPUs all pools may hold together"),
    planner_startup_s: float = typer.Option(60.0, help="planner: seconds before a new worker is routable"),
    planner_max_replicas: Optional[int] = typer.Option(None, help="planner: cap per pool"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON deployment (RunConfig fields, e.g. "
                                          "examples/disagg_4p12d.yaml); its fields override the flags"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write summary.json, requests.parquet/csv (and "
                                       "with a planner replicas.csv/parquet/png) here"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON instead of tables"),
) -> None:
    """Replay a trace through simulated workers and report latency and throughput."""
    try:
        engine = MockerArgs(block_size=block_size, num_gpu_blocks=num_gpu_blocks, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens, timing=timing.value,
                            timing_profile=timing_profile, speedup_ratio=speedup_ratio,
                            enable_prefix_caching=prefix_caching, enable_chunked_prefill=chunked_prefill,
                            preemption_mode=preemption_mode.value, gpus_per_worker=gpus_per_worker,
                            **_profile_latencies(timing_profile))
        router = RouterParams(
            temperature=router_temperature, overlap_score_credit=kv_overlap_score_credit,
            prefill_load_scale=router_prefill_load_scale, kv_events=router_kv_events, ttl_s=router_ttl,
            tie_break=router_tie_break, queue_threshold=router_queue_threshold, queue_policy=router_queue_policy,
            device_types=[d.strip() for d in device_types.split(",")] if device_types else None,
            policy_options=_parse_options(router_option))
        disagg = None
        if prefill_workers or decode_workers:
            if prefill_workers < 1 or decode_workers < 1:
                _fail("disaggregated serving needs --prefill-workers >= 1 and --decode-workers >= 1")
            disagg = DisaggConfig(prefill_workers=prefill_workers, decode_workers=decode_workers,
                                  transfer=TransferConfig(model=kv_model, link=kv_transfer_link,
                                                          bandwidth_gbps=kv_transfer_bandwidth,
                                                          latency_ms=kv_transfer_latency_ms,
                                                          contention=kv_transfer_contention))
        planner_cfg = PlannerConfig(optimization_target=planner_target, predictor=planner_predictor,
                                    max_gpu_budget=planner_gpu_budget, startup_time_s=planner_startup_s,
                                    max_replicas=planner_max_replicas) if planner else None
        cfg = RunConfig(workers=workers, router_mode=router_mode.value, engine=engine, router=router,
                        trace_block_size=trace_block_size, arrival_speedup=arrival_speedup, seed=seed,
                        disagg=disagg, slo=SloConfig(ttft_ms=slo_ttft_ms, itl_ms=slo_itl_ms), planner=planner_cfg,
                        concurrency=concurrency)
        if config is not None:
            cfg = RunConfig(**_merge(json.loads(cfg.model_dump_json()), _load_run_config(config)))
    except ValidationError as exc:
        _fail(_validation_message(exc))
    if not trace.exists():
        _fail(f"trace not found: {trace}")
    try:
        if not as_json:
            err_console.print(f"replaying {trace} on {workers} worker(s) …")
        res = run_api(trace, config=cfg, limit=limit)
    except TraceError as exc:
        _fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if out is not None:
        res.save(out)
    if as_json:
        print(json.dumps(res.summary, indent=2, sort_keys=True))
    else:
        console.print(summary_table(res))
        console.print(totals_table(res))
        if res.replicas is not None:
            console.print(replicas_table(res))
        if out is not None:
            extra = ", replicas.csv/parquet/png" if res.replicas is not None else ""
            console.print(f"wrote {out}/summary.json, requests.parquet, requests.csv{extra}")


@trace_app.command("inspect")
def trace_inspect(
    file: Path = typer.Argument(..., help="Mooncake-style JSONL trace"),
    trace_block_size: int = typer.Option(512, help="tokens per trace hash_id"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Counts, span, rate, ISL/OSL percentiles and the prefix-reuse upper bound of a trace."""
    if not file.exists():
        _fail(f"trace not found: {file}")
    try:
        d = inspect_trace(file, trace_block_size=trace_block_size)
    except TraceError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(d, indent=2))
    else:
        console.print(format_inspection(d))


@trace_app.command("synth")
def trace_synth(
    out: Path = typer.Argument(..., help="JSONL file to write"),
    sessions: Optional[int] = typer.Option(100, help="top-level agent sessions (or use --duration-s)"),
    duration_s: Optional[float] = typer.Option(None, help="generate sessions arriving within this many seconds"),
    rate: float = typer.Option(0.5, help="session arrival rate (Poisson), sessions/s"),
    apps: int = typer.Option(4, help="apps, each with its own shared system prompt"),
    subagent_prob: float = typer.Option(0.1, help="chance a turn fans out to sub-agents"),
    trace_block_size: int = typer.Option(512, help="tokens per hash_id"),
    seed: int = typer.Option(0, help="random seed"),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON with any SynthConfig fields (overrides flags)"),
) -> None:
    """Write a seeded agentic multi-turn trace (shared prompts, growing context, tool gaps, sub-agents, hints)."""
    from dynosim.traces.synth import SynthConfig, synth_agentic, write_jsonl

    fields = dict(seed=seed, rate=rate, n_apps=apps, subagent_prob=subagent_prob, trace_block_size=trace_block_size,
                  num_sessions=None if duration_s is not None else sessions, duration_s=duration_s)
    if config is not None:
        if not config.exists():
            _fail(f"synth config not found: {config}")
        import yaml

        loaded = yaml.safe_load(config.read_text()) or {}
        if not isinstance(loaded, dict):
            _fail(f"{config}: expected a mapping of SynthConfig fields")
        fields.update(loaded)
    try:
        cfg = SynthConfig(**fields)
        rows = synth_agentic(cfg)
    except ValidationError as exc:
        _fail(_validation_message(exc))
    except ValueError as exc:
        _fail(str(exc))
    write_jsonl(rows, out)
    n_sessions = len({r["session_id"] for r in rows})
    console.print(f"wrote {len(rows):,} requests in {n_sessions:,} sessions to {out}")


class LaunchEngine(str, Enum):
    vllm = "vllm"
    sglang = "sglang"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


def _profile_latencies(profile: str | None) -> dict:
    """The calibrated engine terms a timing profile carries (admission interval, client latency)."""
    if not profile:
        return {}
    from dynosim.engines.mocker.timing import profile_engine_args

    try:
        prof = profile_engine_args(profile)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    return {k: prof[k] for k in ("admit_interval_ms", "client_latency_ms") if k in prof}


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_run_config(path: Path) -> dict:
    import yaml

    if not path.exists():
        _fail(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        _fail(f"{path}: not valid YAML/JSON: {exc}")
    if not isinstance(data, dict):
        _fail(f"{path}: expected a mapping of RunConfig fields")
    return data


@app.command()
def validate(
    trace: Path = typer.Option(..., "--trace", "-t", help="Mooncake-style JSONL trace"),
    launch: Optional[LaunchEngine] = typer.Option(None, help="start the servers: vllm (CPU or CUDA) or sglang"),
    endpoint: list[str] = typer.Option([], "--endpoint", help="attach to a running server (once per worker)"),
    kv_events: list[str] = typer.Option([], "--kv-events", help="attach mode: ZMQ endpoint each engine "
                                        "publishes KV events to (we bind it), once per --endpoint"),
    model: str = typer.Option("", help="model directory or name to launch"),
    served_model_name: Optional[str] = typer.Option(None, help="model name the servers serve (default: --model)"),
    device: Device = typer.Option("cpu", help="cpu (the CPU build of vLLM) or cuda"),
    engine_python: Optional[str] = typer.Option(None, help="Python with the engine installed "
                                                "(default: .venv-vllm/bin/python when present)"),
    workers: int = typer.Option(1, "--workers", "-w", help="aggregated engine workers"),
    prefill_workers: int = typer.Option(0, help="disaggregated: prefill workers (the router's pool)"),
    decode_workers: int = typer.Option(0, help="disaggregated: decode workers fed over NIXL (predicted with the simulator's P/D model)"),
    decode_endpoint: list[str] = typer.Option([], "--decode-endpoint", help="attach, disaggregated: a decode "
                                              "server (once each); --endpoint then lists the prefill servers"),
    router_mode: RouterMode = typer.Option("kv", "--router-mode", help="routing policy"),
    router_kv_events: bool = typer.Option(True, "--router-kv-events/--no-router-kv-events",
                                          help="KV router: index the engines' KV events (else approximate)"),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON of RunConfig fields (overrides the flags)"),
    block_size: Optional[int] = typer.Option(None, help="KV block size (default: the timing profile's, else 32)"),
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity per worker in blocks "
                                                 "(default: the timing profile's, else 16384)"),
    max_num_seqs: int = typer.Option(256, help="cap on running requests per worker (passed to the engine)"),
    max_num_batched_tokens: int = typer.Option(2048, help="token budget of one pass (passed to the engine)"),
    timing: TimingName = typer.Option("interpolated", help="timing model of the prediction"),
    timing_profile: Optional[str] = typer.Option(None, help="profile from `dynosim calibrate` (or bundled name)"),
    admit_interval_ms: Optional[float] = typer.Option(None, help="simulated engine: requests admitted this far "
                                                      "apart (default: the timing profile's, else 0)"),
    client_latency_ms: Optional[float] = typer.Option(None, help="simulated engine: fixed delay from a token to "
                                                      "the client (default: the timing profile's, else 0)"),
    trace_block_size: int = typer.Option(512, help="tokens per trace hash_id"),
    arrival_speedup: float = typer.Option(1.0, help="divide arrival times and session delays by this"),
    limit: Optional[int] = typer.Option(None, help="replay only the first N trace rows"),
    seed: int = typer.Option(0, help="random seed (router tie-breaks)"),
    max_model_len: int = typer.Option(2048, help="engine context limit (launch)"),
    base_port: int = typer.Option(18000, help="first HTTP port of launched servers"),
    events_base_port: int = typer.Option(18500, help="first KV-event port of launched servers"),
    gpus_per_worker: int = typer.Option(1, help="CUDA: GPUs (tensor parallel) per worker"),
    match_kv_capacity: bool = typer.Option(True, "--match-kv-capacity/--no-match-kv-capacity",
                                           help="launch with --num-gpu-blocks-override = the simulated capacity"),
    startup_timeout: float = typer.Option(600.0, help="seconds to wait for launched servers"),
    request_timeout: float = typer.Option(600.0, help="seconds one request may take"),
    vocab_size: int = typer.Option(2048, help="prompt token ids are drawn in [4, vocab size)"),
    tolerance: float = typer.Option(0.10, help="relative error allowed on gated metrics"),
    reuse_tolerance: float = typer.Option(0.02, help="absolute difference allowed on prefix reuse"),
    engine_arg: list[str] = typer.Option([], "--engine-arg", help="extra argument for launched servers"),
    out: Path = typer.Option(Path("runs/validate"), "--out", "-o", help="output folder"),
) -> None:
    """Replay a trace on live engines, simulate the same deployment, and compare per metric.

    Exit status: 0 within tolerance, 1 a gated metric is out of tolerance, 3 the live run
    lost requests (failures, timeouts, a dead server), 2 bad input.
    """
    from dynosim.engines.mocker.timing import profile_engine_args
    from dynosim.traces.mooncake import load_trace
    from dynosim.validate.servers import ServerError
    from dynosim.validate.workflow import ValidateOptions, validate as validate_api

    if launch is None and not endpoint:
        _fail("give --launch vllm (start servers) or --endpoint URL (attach), once per worker")
    if launch is not None and endpoint:
        _fail("--launch and --endpoint exclude each other")
    if decode_endpoint:
        decode_workers = len(decode_endpoint)
    if decode_workers:
        if launch is not None and prefill_workers < 1:
            _fail("a disaggregated launch needs --prefill-workers >= 1 and --decode-workers >= 1")
        workers = prefill_workers if launch is not None else len(endpoint)
    elif prefill_workers:
        _fail("--prefill-workers needs --decode-workers (or --decode-endpoint)")
    if endpoint and workers != len(endpoint) and config is None:
        workers = len(endpoint)
    try:
        prof = profile_engine_args(timing_profile) if timing_profile else {}
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    try:
        fields = dict(workers=workers, router_mode=router_mode.value, seed=seed, trace_block_size=trace_block_size,
                      arrival_speedup=arrival_speedup,
                      router=RouterParams(kv_events=router_kv_events),
                      engine=MockerArgs(block_size=block_size or prof.get("block_size", 32),
                                        num_gpu_blocks=num_gpu_blocks or prof.get("num_gpu_blocks", 16384),
                                        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                        timing=timing.value, timing_profile=timing_profile,
                                        admit_interval_ms=admit_interval_ms if admit_interval_ms is not None
                                        else prof.get("admit_interval_ms", 0.0),
                                        client_latency_ms=client_latency_ms if client_latency_ms is not None
                                        else prof.get("client_latency_ms", 0.0)))
        if config is not None:
            fields = _merge(json.loads(RunConfig(**fields).model_dump_json()), _load_run_config(config))
        cfg = RunConfig(**fields)
    except ValidationError as exc:
        _fail(_validation_message(exc))
    if not trace.exists():
        _fail(f"trace not found: {trace}")
    try:
        tr = load_trace(trace, trace_block_size=cfg.trace_block_size, speedup=cfg.arrival_speedup, limit=limit)
    except TraceError as exc:
        _fail(str(exc))
    opts = ValidateOptions(out=out, model=model, served_model_name=served_model_name,
                           launch=launch.value if launch else None, endpoints=list(endpoint),
                           kv_event_endpoints=list(kv_events), device=device.value, engine_python=engine_python,
                           base_port=base_port, events_base_port=events_base_port, gpus_per_worker=gpus_per_worker,
                           max_model_len=max_model_len, match_kv_capacity=match_kv_capacity,
                           startup_timeout_s=startup_timeout, request_timeout_s=request_timeout,
                           vocab_size=vocab_size, tolerance=tolerance, reuse_tolerance=reuse_tolerance,
                           extra_engine_args=tuple(engine_arg), decode_workers=decode_workers,
                           decode_endpoints=list(decode_endpoint))
    try:
        res = validate_api(tr, cfg, opts, say=lambda m: err_console.print(m))
    except ServerError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(comparison_table(res.table))
    r = res.measured["requests"]
    console.print(f"live: {r['completed']} completed, {r['failed']} failed, {r.get('not_sent', 0)} not sent; "
                  f"prefix reuse from {res.measured.get('prefix_reuse_source')}; wrote {out}/comparison.csv, "
                  "comparison.json, comparison.png, measured/, predicted/")
    if res.measured.get("aborted"):
        err_console.print(f"[red]run aborted:[/red] {res.measured['aborted']}")
    for reason, n in res.measured.get("failure_reasons", {}).items():
        err_console.print(f"[red]failed ×{n}:[/red] {reason}")
    verdict = {0: "[green]PASS[/green]", 1: "[red]FAIL: out of tolerance[/red]",
               3: "[red]INCOMPLETE: requests lost[/red]"}[res.exit_code]
    console.print(verdict)
    raise typer.Exit(res.exit_code)


def comparison_table(table) -> Table:
    from dynosim.validate.compare import format_error

    t = Table(title="measured vs predicted")
    for col in ("metric", "measured", "predicted", "error", "tolerance", ""):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for _, row in table.iterrows():
        mark = "n/a" if row["predicted"] != row["predicted"] else (
            ("ok" if row["ok"] else "[red]OUT[/red]") if row["gated"] else "(info)")
        tol = f"{row['tolerance']:.3f}" if row["error_kind"] == "abs" else f"{100 * row['tolerance']:.0f}%"
        t.add_row(row["label"], _fmt(row["measured"], 3), _fmt(row["predicted"], 3), format_error(row), tol, mark)
    return t


def _int_list(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        _fail(f"{name}: expected comma-separated integers, got {text!r}")


@app.command()
def calibrate(
    out: Path = typer.Option(..., "--out", "-o", help="profile to write (YAML), e.g. profiles/cpu_tiny.yaml"),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="a running server to measure"),
    launch: Optional[LaunchEngine] = typer.Option(None, help="start one server to measure (vllm)"),
    model: str = typer.Option("", help="model directory or name to launch"),
    served_model_name: Optional[str] = typer.Option(None, help="model name the server serves (default: --model)"),
    device: Device = typer.Option("cpu", help="cpu (the CPU build of vLLM) or cuda"),
    engine_python: Optional[str] = typer.Option(None, help="Python with the engine installed"),
    block_size: Optional[int] = typer.Option(None, help="KV block size (launch: passed to the engine; "
                                             "attach: only if the server does not report it)"),
    num_gpu_blocks: Optional[int] = typer.Option(None, help="KV capacity in blocks (as --block-size)"),
    max_num_seqs: int = typer.Option(256, help="launch: the engine's cap on running requests"),
    max_num_batched_tokens: int = typer.Option(2048, help="launch: the engine's token budget per pass"),
    max_model_len: int = typer.Option(2048, help="launch: the engine's context limit"),
    base_port: int = typer.Option(18000, help="launch: HTTP port"),
    quick: bool = typer.Option(False, "--quick", help="a small plan (tests, CI, a first look)"),
    prefill_lengths: Optional[str] = typer.Option(None, help="comma list of prompt lengths to time"),
    decode_batches: Optional[str] = typer.Option(None, help="comma list of concurrent streams to time"),
    decode_contexts: Optional[str] = typer.Option(None, help="comma list of decode context lengths"),
    repeats: Optional[int] = typer.Option(None, help="requests per prefill point (median)"),
    vocab_size: int = typer.Option(2048, help="prompt token ids are drawn in [4, vocab size)"),
    hardware: Optional[str] = typer.Option(None, help="free text recorded in the profile"),
    startup_timeout: float = typer.Option(600.0, help="launch: seconds to wait for the server"),
    engine_arg: list[str] = typer.Option([], "--engine-arg", help="launch: extra server argument"),
) -> None:
    """Measure a live engine's prefill and decode pass times and write a timing profile.

    The profile works with `run`/`validate`: `--timing interpolated --timing-profile FILE`
    (tables) or `--timing polynomial --timing-profile FILE` (fitted quadratics); its
    engine section (block size, KV blocks) sizes the simulated cache like the real one.
    """
    import asyncio
    import shutil
    import tempfile

    from dynosim.validate.calibrate import CalibrationError, CalibrationPlan, calibrate as calibrate_api, \
        write_profile
    from dynosim.validate.servers import ServerError, default_engine_python, start_server, stop_all, wait_ready
    from dynosim.validate.workflow import ValidateOptions, launch_specs

    if (endpoint is None) == (launch is None):
        _fail("give exactly one of --endpoint URL (measure a running server) or --launch vllm")
    if launch is not None and not model:
        _fail("--launch needs --model")
    overrides = {k: v for k, v in (("prefill_lengths", _int_list(prefill_lengths, "--prefill-lengths")),
                                   ("decode_batches", _int_list(decode_batches, "--decode-batches")),
                                   ("decode_contexts", _int_list(decode_contexts, "--decode-contexts")),
                                   ("prefill_repeats", repeats)) if v is not None}
    try:
        plan = CalibrationPlan.quick(**overrides) if quick else CalibrationPlan(**overrides)
    except ValidationError as exc:
        _fail(_validation_message(exc))
    name = served_model_name or model

    async def go():
        servers = []
        workdir = tempfile.mkdtemp(prefix="dynosim-")
        try:
            url = endpoint
            if launch is not None:
                cfg = RunConfig(engine=MockerArgs(block_size=block_size or 32, num_gpu_blocks=num_gpu_blocks or 16384,
                                                  max_num_seqs=max_num_seqs,
                                                  max_num_batched_tokens=max_num_batched_tokens))
                opts = ValidateOptions(out=out.parent, model=model, served_model_name=name, device=device.value,
                                       base_port=base_port, max_model_len=max_model_len,
                                       match_kv_capacity=num_gpu_blocks is not None,
                                       extra_engine_args=tuple(engine_arg))
                spec = launch_specs(cfg, opts, False, workdir)[0]
                log_dir = out.parent / f"{out.stem}_logs"
                servers.append(start_server("calibrate", spec, log_dir, engine=launch.value,
                                            python=engine_python or default_engine_python(launch.value)))
                err_console.print(f"started {launch.value} on {servers[0].url}; waiting (log {servers[0].log_path}) …")
                await wait_ready(servers, name, startup_timeout)
                url = servers[0].url
            err_console.print(f"calibrating {url} (~{plan.n_requests()} requests, ~{plan.estimate_s():.0f} s) …")
            return await calibrate_api(url, name, plan, progress=lambda m: err_console.print(m),
                                       vocab_size=vocab_size, block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                                       hardware=hardware)
        finally:
            stop_all(servers)
            shutil.rmtree(workdir, ignore_errors=True)

    try:
        result = asyncio.run(go())
    except (CalibrationError, ServerError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3)
    except ValueError as exc:
        _fail(str(exc))
    path = write_profile(result, out)
    console.print(f"wrote {path}; use it with --timing interpolated --timing-profile {path}")


@trace_app.command("convert")
def trace_convert(
    trace: Path = typer.Argument(..., help="Mooncake-style JSONL trace to read"),
    out: Path = typer.Argument(..., help="JSONL file to write"),
    token_scale: int = typer.Option(1, help="divide input/output lengths by this (must divide the block size)"),
    trace_block_size: int = typer.Option(512, help="tokens per hash_id of the input trace"),
    skip: int = typer.Option(0, help="leave out the first N rows"),
    limit: Optional[int] = typer.Option(None, help="keep at most N rows"),
    max_total_tokens: Optional[int] = typer.Option(None, help="leave out rows whose input+output exceeds this "
                                                   "(counted and reported)"),
) -> None:
    """Cut a window of rows and shrink token lengths (e.g. to replay a production trace on a tiny model)."""
    from dynosim.traces.convert import shrink
    from dynosim.traces.synth import write_jsonl

    if not trace.exists():
        _fail(f"trace not found: {trace}")
    try:
        res = shrink(trace, token_scale=token_scale, trace_block_size=trace_block_size, skip=skip, limit=limit,
                     max_total_tokens=max_total_tokens)
    except TraceError as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(str(exc))
    write_jsonl(res.rows, out)
    console.print(f"wrote {len(res.rows):,} rows to {out} (trace block size now {res.trace_block_size}; "
                  f"{res.dropped_too_long:,} of {res.scanned:,} rows left out as longer than {max_total_tokens} tokens)")


def _float_list(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{name}: expected comma-separated numbers, got {text!r}")


def pareto_table(front, top: int) -> Table:
    """The best points by output tokens/s/GPU among those meeting the objectives (AIConfigurator-style)."""
    t = Table(title=f"top {min(top, len(front))} Pareto points by output tokens/s/GPU")
    cols = [("config", "config", None), ("load", "load", 2), ("tok/s/GPU", "output_tps_per_gpu", 1),
            ("tok/s/user", "tps_user_mean", 1), ("TTFT p90 ms", "ttft_p90", 0), ("ITL ms", "itl_mean", 2),
            ("goodput req/s", "goodput_rps", 3), ("SLO %", "slo_attainment", None)]
    for label, _, _ in cols:
        t.add_column(label, justify="left" if label == "config" else "right")
    for _, r in front.sort_values("output_tps_per_gpu", ascending=False).head(top).iterrows():
        cells = []
        for label, key, nd in cols:
            v = r[key]
            ci = r.get(f"{key}_ci", 0.0)
            if key == "config":
                cells.append(str(v))
            elif key == "slo_attainment":
                cells.append(_fmt(100 * v, 1))
            else:
                cells.append(_fmt(v, nd) + (f" ±{_fmt(ci, nd)}" if ci and ci == ci else ""))
        t.add_row(*cells)
    return t


@app.command()
def sweep(
    trace: Path = typer.Option(..., "--trace", "-t", help="Mooncake-style JSONL trace"),
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="YAML/JSON SweepSpec (flags override it)"),
    out: Path = typer.Option(Path("sweep-out"), "--out", "-o", help="results folder (re-running resumes it)"),
    budget: Optional[int] = typer.Option(None, help="GPUs per deployment (default 16)"),
    mode: Optional[str] = typer.Option(None, help="comma list: agg, disagg"),
    tp: Optional[str] = typer.Option(None, help="comma list of GPUs per worker"),
    router_mode: Optional[str] = typer.Option(None, "--router-mode", help="comma list of routing policies"),
    load: Optional[str] = typer.Option(None, help="comma list of arrival-rate factors (default 1,2,4,8)"),
    concurrency: Optional[str] = typer.Option(None, help="comma list of closed-loop concurrencies (sessions "
                                              "open at once), instead of --load"),
    repeats: Optional[int] = typer.Option(None, help="seeds per point (confidence intervals)"),
    resample_fraction: Optional[float] = typer.Option(None, help="with --repeats: each seed replays its own random "
                                                      "subset of this share of the sessions"),
    executor: str = typer.Option("local", help="local (process pool, all cores), serial, or ray"),
    jobs: Optional[int] = typer.Option(None, help="parallel simulations (default: all cores)"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: a local instance)"),
    limit: Optional[int] = typer.Option(None, help="replay only the first N trace rows"),
    ttft_p90: Optional[float] = typer.Option(None, "--ttft-p90", help="keep points with p90 TTFT ≤ this (ms)"),
    itl: Optional[float] = typer.Option(None, "--itl", help="keep points with mean ITL ≤ this (ms)"),
    e2e: Optional[float] = typer.Option(None, "--e2e", help="keep points with p90 E2E ≤ this (ms)"),
    top: int = typer.Option(10, help="rows of the printed Pareto table"),
) -> None:
    """Sweep deployments over a trace; write results.parquet, pareto.csv, pareto.png; print the best points."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from dynosim.sweeps.spec import SweepSpec, expand
    from dynosim.sweeps.sweep import sweep as sweep_api

    if executor not in ("local", "serial", "ray"):
        _fail(f"--executor: unknown {executor!r}; choose local, serial or ray")
    fields = _load_run_config(spec_file) if spec_file is not None else {}
    over = {"gpu_budget": budget, "repeats": repeats, "resample_fraction": resample_fraction,
            "modes": [m.strip() for m in mode.split(",") if m.strip()] if mode else None,
            "tp": [int(x) for x in _float_list(tp, "--tp")] if tp else None,
            "router_modes": [m.strip() for m in router_mode.split(",") if m.strip()] if router_mode else None,
            "arrival_speedups": _float_list(load, "--load"),
            "concurrency": [int(x) for x in _float_list(concurrency, "--concurrency")] if concurrency else None}
    fields.update({k: v for k, v in over.items() if v is not None})
    try:
        spec = SweepSpec(**fields)
        n = len(expand(spec))
    except ValidationError as exc:
        _fail(_validation_message(exc))
    except ValueError as exc:
        _fail(str(exc))
    if not trace.exists():
        _fail(f"trace not found: {trace}")
    err_console.print(f"sweep: {n} points ({spec.repeats} seed(s) each) on {trace} → {out}")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console) as bar:
        task = bar.add_task("points", total=n)
        try:
            res = sweep_api(trace, spec, out, executor=executor, jobs=jobs, limit=limit, ray_address=ray_address,
                            ttft_p90=ttft_p90, itl=itl, e2e=e2e,
                            progress=lambda done, total: bar.update(task, completed=done))
        except TraceError as exc:
            _fail(str(exc))
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
    err_console.print(f"ran {res.ran} point(s), {n - res.ran} from the store; "
                      f"{int(res.points['meets_slo'].sum())}/{len(res.points)} meet the objectives")
    console.print(pareto_table(res.frontier, top))
    console.print(f"wrote {out}/results.parquet, points.csv, pareto.csv, pareto.png")


@app.command()
def regress(
    spec_file: Path = typer.Option(..., "--spec", help="YAML regress spec: cases (trace + RunConfig), metrics, "
                                   "tolerances"),
    baseline: Path = typer.Option(..., "--baseline", help="baseline JSON (committed next to the spec)"),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="write the current figures as the "
                                         "baseline instead of comparing"),
) -> None:
    """Run fixed cases and compare with a baseline: exit 1 when a metric got worse beyond its tolerance."""
    from dynosim.sweeps.regress import compare as compare_regress, load_spec, read_baseline, run_cases, \
        write_baseline

    try:
        spec, root = load_spec(spec_file)
        base = None if update_baseline else read_baseline(baseline)
        current = run_cases(spec, root)
    except TraceError as exc:
        _fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if update_baseline:
        write_baseline(baseline, current)
        console.print(f"wrote the baseline for {len(current)} case(s) to {baseline}")
        return
    report = compare_regress(spec, base, current)
    t = Table(title=f"dynosim regress: {len(spec.cases)} case(s), {report.regressions} regression(s)")
    for c in ("case", "metric", "baseline", "current", "change", "tolerance", "status"):
        t.add_column(c, justify="left" if c in ("case", "metric", "status") else "right")
    for r in report.table.itertuples(index=False):
        style = {"REGRESSED": "red", "improved": "green"}.get(r.status)
        t.add_row(r.case, r.metric, _fmt(r.baseline, 3), _fmt(r.current, 3), f"{100 * r.change:+.2f}%",
                  f"{100 * r.tolerance:.1f}%", f"[{style}]{r.status}[/{style}]" if style else r.status)
    console.print(t)
    if report.missing:
        err_console.print(f"[red]no baseline for case(s): {', '.join(report.missing)}[/red] "
                          "(run with --update-baseline)")
    raise typer.Exit(report.exit_code)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
