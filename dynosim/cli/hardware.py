"""`dynosim hardware list|show`: what the database covers, and what one worker on named hardware is."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.table import Table

from dynosim.cli.app import console, hardware_app
from dynosim.cli.common import (P_ENGINE, P_HW, HwBackendOpt, HwKvQuantOpt, HwMemUtilOpt, HwVersionOpt,
                                HwWeightQuantOpt, fail, fmt, validation_message)


@hardware_app.command("list")
def list_(
    no_models: bool = typer.Option(False, "--no-models", help="list the GPU systems only, not the models"),
) -> None:
    """Print the GPU systems, their engines and versions, and the models the database can price."""
    from dynosim.hardware.catalog import BACKENDS, system_names, system_spec, version_slots

    t = Table(title="GPU systems (per GPU) and engine versions with measured data")
    t.add_column("system", no_wrap=True)
    for c in ("HBM\nGB", "TB/s", "GPUs\nper\nnode"):  # narrow headers leave the versions room in 80 columns
        t.add_column(c, justify="right", no_wrap=True)
    for c in BACKENDS:  # a version is never cut: "+N" (more versions) wraps under it in a narrow terminal
        t.add_column(c, overflow="fold")
    for name in system_names():
        sp = system_spec(name)
        cells = []
        for b in BACKENDS:
            slots = version_slots(name, b)
            more = len(slots) - 1
            cells.append(f"{slots['current']}{f' +{more}' if more > 0 else ''}" if slots else "-")
        t.add_row(name, fmt(sp.hbm_bytes / 1e9, 0), fmt(sp.mem_bw / 1e12, 1), str(sp.gpus_per_node), *cells)
    console.print(t)
    console.print("Versions: the default; +N: N more (current/previous/next aliases, `hardware show`). '-': no "
                  "measured data (--timing roofline prices it, labelled uncalibrated).")
    if not no_models:
        from dynosim.hardware.catalog import model_names, resolve_model
        from dynosim.hardware.model import model_shape

        m = Table(title="models (Hugging Face ids; --model also takes a path to a config.json)")
        m.add_column("model", overflow="fold")  # a long id folds onto a second line, never cut
        m.add_column("B params\n(active)", no_wrap=True, justify="right")
        m.add_column("kind", no_wrap=True)
        for name in model_names():
            try:
                s = model_shape(resolve_model(name))
            except ValueError:
                m.add_row(name, "?", "?")
                continue
            kind = ("MLA" if s.is_mla else "GQA") + (f" MoE{s.num_experts}" if s.is_moe else "")
            m.add_row(name, f"{s.total_params / 1e9:,.0f} ({s.active_params / 1e9:,.0f})", kind)
        console.print(m)


@hardware_app.command("show")
def show(
    model: str = typer.Option(..., "--model", help="database model id or path to a config.json",
                              rich_help_panel=P_HW),
    system: str = typer.Option(..., "--system", help="GPU system", rich_help_panel=P_HW),
    backend: HwBackendOpt = None,
    backend_version: HwVersionOpt = None,
    tp: int = typer.Option(1, help="tensor parallel GPUs", rich_help_panel=P_HW),
    pp: int = typer.Option(1, help="pipeline parallel stages", rich_help_panel=P_HW),
    ep: int = typer.Option(1, help="MoE: expert parallel ranks", rich_help_panel=P_HW),
    dp: int = typer.Option(1, help="MoE: attention data-parallel ranks", rich_help_panel=P_HW),
    weight_quant: HwWeightQuantOpt = None,
    kv_quant: HwKvQuantOpt = None,
    gpu_memory_utilization: HwMemUtilOpt = None,
    block_size: int = typer.Option(64, help="tokens per KV block", rich_help_panel=P_ENGINE),
    max_num_batched_tokens: int = typer.Option(8192, help="token budget of one pass (sizes the activations)",
                                               rich_help_panel=P_ENGINE),
    max_num_seqs: int = typer.Option(256, help="cap on running requests (sizes the logits)",
                                     rich_help_panel=P_ENGINE),
    timing: str = typer.Option("aic", help="price the sample passes with: aic | roofline", rich_help_panel=P_ENGINE),
    nextn: int = typer.Option(0, help="speculative decoding draft tokens (priced as verify width)",
                              rich_help_panel=P_ENGINE),
) -> None:
    """Print what one worker is: GPUs, weights and KV per GPU, KV capacity, and a few priced passes."""
    from dynosim.hardware.memory import worker_memory
    from dynosim.hardware.spec import HardwareSpec

    fields = {"model": model, "system": system, "backend": backend, "backend_version": backend_version, "tp": tp,
              "pp": pp, "ep": ep, "dp": dp, "weight_quant": weight_quant, "kv_quant": kv_quant,
              "gpu_memory_utilization": gpu_memory_utilization}
    if timing not in ("aic", "roofline"):
        fail(f"--timing: {timing!r} does not price named hardware; choose aic or roofline")
    try:
        hw = HardwareSpec(**{k: v for k, v in fields.items() if v is not None})
        mem = worker_memory(hw, block_size, max_num_batched_tokens, max_num_seqs)
        if timing == "aic":
            from dynosim.hardware.aic import aic_timing

            tm = aic_timing(hw, nextn)
            version = hw.version()
        else:
            from dynosim.hardware.roofline import RooflineTiming

            tm = RooflineTiming(hw, nextn)
            version = hw.backend_version or "-"
    except ValidationError as exc:
        fail(validation_message(exc))
    except ValueError as exc:
        fail(str(exc))
    s = hw.shape
    t = Table(title=f"one worker: {hw.label()}", show_header=False)
    t.add_column("k", overflow="fold")  # in a narrow terminal the names wrap, the figures stay whole
    t.add_column("v", justify="right", no_wrap=True)
    rows = [
        ("engine version", version),
        ("GPUs per worker (TP × PP × DP)", str(hw.gpus)),
        ("parameters (total / active per token)", f"{s.total_params / 1e9:,.1f} B / {s.active_params / 1e9:,.1f} B"),
        ("weights / KV dtype", f"{hw.weights_dtype} / {hw.kv_dtype}"),
        ("HBM per GPU × utilisation", f"{mem.hbm_gb_per_gpu:,.1f} GB × {hw.gpu_memory_utilization:g} = "
                                      f"{mem.usable_gb_per_gpu:,.1f} GB"),
        ("weights per GPU", f"{mem.weights_gb_per_gpu:,.2f} GB"),
        ("reserve per GPU (runtime, NCCL, activations)", f"{mem.reserve_gb_per_gpu:,.2f} GB"),
        ("KV cache per GPU", f"{mem.kv_gb_per_gpu:,.2f} GB"),
        ("KV bytes per token (model / per GPU)", f"{mem.kv_bytes_per_token:,.0f} / "
                                                 f"{mem.kv_bytes_per_token_per_gpu:,.0f}"),
        ("KV capacity per worker", f"{mem.kv_tokens_per_worker:,} tokens = {mem.kv_blocks_per_worker:,} blocks "
                                   f"of {block_size}"),
        ("pass prices from", "aic (measured database)" if timing == "aic" else "roofline (uncalibrated)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    p = Table(title="priced passes (ms)")
    for c in ("pass", "prefill tokens", "decode requests", "context each", "ms"):
        p.add_column(c, justify="left" if c == "pass" else "right", no_wrap=c in ("pass", "ms"))
    samples = [("prefill", 1, 1024, 0, 0), ("prefill", 1, 4096, 0, 0), ("prefill", 1, 8192, 0, 0),
               ("decode", 0, 0, 1, 4096), ("decode", 0, 0, 32, 4096), ("decode", 0, 0, 128, 4096),
               ("mixed", 1, 2048, 32, 4096)]
    for kind, n_pre, pre, n_dec, ctx in samples:
        ms = tm.pass_ms(n_pre, pre, n_dec, n_dec * ctx)
        p.add_row(kind, f"{pre:,}" if pre else "-", str(n_dec) if n_dec else "-", f"{ctx:,}" if n_dec else "-",
                  fmt(ms, 2))
    console.print(p)
