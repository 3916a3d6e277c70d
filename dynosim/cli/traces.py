"""`dynosim trace inspect | synth | convert`: look at traces and make new ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from dynosim.cli.app import console, trace_app
from dynosim.cli.common import fail, given_flags, refuse, validation_message
from dynosim.traces.inspect import format_inspection, inspect_trace
from dynosim.traces.mooncake import TraceError


@trace_app.command("inspect")
def trace_inspect(
    file: Path = typer.Argument(..., help="Mooncake-style JSONL trace"),
    trace_block_size: int = typer.Option(512, help="tokens per trace hash_id"),  # two options: one panel
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Counts, span, rate, ISL/OSL percentiles and the prefix-reuse upper bound of a trace."""
    if not file.exists():
        fail(f"trace not found: {file}")
    try:
        d = inspect_trace(file, trace_block_size=trace_block_size)
    except TraceError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(d, indent=2))
    else:
        console.print(format_inspection(d))


@trace_app.command("synth")
def trace_synth(
    ctx: typer.Context,
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

    if duration_s is not None:
        refuse(given_flags(ctx), ["sessions"], "with --duration-s (the count follows from the duration and --rate)")
    fields = dict(seed=seed, rate=rate, n_apps=apps, subagent_prob=subagent_prob, trace_block_size=trace_block_size,
                  num_sessions=None if duration_s is not None else sessions, duration_s=duration_s)
    if config is not None:
        if not config.exists():
            fail(f"synth config not found: {config}")
        import yaml

        loaded = yaml.safe_load(config.read_text()) or {}
        if not isinstance(loaded, dict):
            fail(f"{config}: expected a mapping of SynthConfig fields")
        fields.update(loaded)
    try:
        cfg = SynthConfig(**fields)
        rows = synth_agentic(cfg)
    except ValidationError as exc:
        fail(validation_message(exc))
    except ValueError as exc:
        fail(str(exc))
    write_jsonl(rows, out)
    n_sessions = len({r["session_id"] for r in rows})
    console.print(f"wrote {len(rows):,} requests in {n_sessions:,} sessions to {out}")


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
        fail(f"trace not found: {trace}")
    try:
        res = shrink(trace, token_scale=token_scale, trace_block_size=trace_block_size, skip=skip, limit=limit,
                     max_total_tokens=max_total_tokens)
    except TraceError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    write_jsonl(res.rows, out)
    left_out = f"; {res.dropped_too_long:,} of {res.scanned:,} rows left out as longer than {max_total_tokens} " \
        "tokens" if max_total_tokens is not None else ""
    console.print(f"wrote {len(res.rows):,} rows to {out} (trace block size now {res.trace_block_size}{left_out})")
