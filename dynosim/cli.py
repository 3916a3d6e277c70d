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
from dynosim.config import RouterParams, RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.timing import TIMING_MODELS
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
    t = Table(title=f"dynosim run: {s['requests']['completed']}/{s['requests']['total']} requests, "
                    f"{res.config.workers} workers, router {res.config.router_mode}")
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
        ("prefix reuse ratio", _fmt(s["prefix_reuse_ratio"], 4)),
        ("preemptions", str(s["preemptions"])),
        ("failed requests", str(s["requests"]["failed"])),
        ("wall time (s)", _fmt(s["run"]["wall_s"], 2)),
        ("× real time", _fmt(s["run"]["x_realtime"], 0)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


@app.command()
def run(
    trace: Path = typer.Option(..., "--trace", "-t", help="Mooncake-style JSONL trace"),
    workers: int = typer.Option(1, "--workers", "-w", help="aggregated engine workers"),
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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write summary.json and requests.parquet/csv here"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON instead of tables"),
) -> None:
    """Replay a trace through simulated workers and report latency and throughput."""
    try:
        engine = MockerArgs(block_size=block_size, num_gpu_blocks=num_gpu_blocks, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens, timing=timing.value,
                            timing_profile=timing_profile, speedup_ratio=speedup_ratio,
                            enable_prefix_caching=prefix_caching, enable_chunked_prefill=chunked_prefill,
                            preemption_mode=preemption_mode.value, gpus_per_worker=gpus_per_worker)
        router = RouterParams(
            temperature=router_temperature, overlap_score_credit=kv_overlap_score_credit,
            prefill_load_scale=router_prefill_load_scale, kv_events=router_kv_events, ttl_s=router_ttl,
            tie_break=router_tie_break, queue_threshold=router_queue_threshold, queue_policy=router_queue_policy,
            device_types=[d.strip() for d in device_types.split(",")] if device_types else None,
            policy_options=_parse_options(router_option))
        cfg = RunConfig(workers=workers, router_mode=router_mode.value, engine=engine, router=router,
                        trace_block_size=trace_block_size, arrival_speedup=arrival_speedup, seed=seed)
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
        if out is not None:
            console.print(f"wrote {out}/summary.json, requests.parquet, requests.csv")


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


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
