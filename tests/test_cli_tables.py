"""The CLI's tables fit an 80-column terminal: no line wider, no number or name cut to "…".

Tables are rendered on an 80-column console (the commands' own consoles read COLUMNS once, at import,
so the tests swap in a narrow one). Every figure a table shows is looked for whole in the output.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import dynosim
from dynosim.cli import app
from dynosim.cli.common import fmt, row_decimals

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "traces" / "conversation_1k.jsonl"
runner = CliRunner()


def render(table) -> str:
    buf = io.StringIO()
    Console(width=80, file=buf, color_system=None).print(table)
    return buf.getvalue()


def assert_fits(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, "wider than 80 columns:\n" + "\n".join(wide)
    cut = re.findall(r"\S+…", text)
    assert not cut, f"cut cells {cut}:\n{text}"


def tokens(text: str) -> set[str]:
    return {t for line in text.splitlines() for t in re.split(r"[\s│┃]+", line) if t}


@pytest.fixture
def narrow(monkeypatch):
    """The commands print on an 80-column console (as in a terminal started with COLUMNS=80)."""
    import dynosim.cli.hardware as hardware_cli
    import dynosim.cli.run as run_cli

    for mod in (run_cli, hardware_cli):
        monkeypatch.setattr(mod, "console", Console(width=80, color_system=None))


def test_row_decimals_drop_as_numbers_grow():
    assert [row_decimals(v) for v in ([12.3456], [123.456], [13940.3], [float("nan"), 5.0])] == [2, 1, 0, 2]
    assert row_decimals([0.1234], 3) == 3 and row_decimals([250.0], 3) == 1


def test_run_tables_fit_80_columns_with_every_number_whole(narrow):
    res = runner.invoke(app, ["run", "-t", str(SAMPLE), "-w", "2", "--router-mode", "kv"])
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    s = dynosim.run(SAMPLE, workers=2, router_mode="kv").summary
    words = tokens(res.stdout)
    for key in ("ttft_ms", "itl_ms", "token_gap_ms", "e2e_ms", "tps_user"):
        values = [s[key][c] for c in ("mean", "p50", "p90", "p95", "p99", "std")]
        nd = row_decimals(values)
        for v in values:
            assert fmt(v, nd) in words, (key, fmt(v, nd))
    assert s["e2e_ms"]["p99"] > 10_000  # a five-digit latency, the kind that used to end in "…"
    for v in (fmt(s["throughput"]["input_tokens_per_s"], 1), fmt(s["prefix_reuse_ratio"], 4)):
        assert v in words


def test_long_goodput_label_wraps_and_its_value_stays_whole(narrow):
    """Three objectives make the label longer than the table: the label wraps, the figures do not."""
    from dynosim.cli.run_tables import totals_table

    from dynosim.config import RunConfig

    cfg = RunConfig(workers=2, slo={"ttft_ms": 500, "itl_ms": 50, "e2e_ms": 20000})
    res = dynosim.run(SAMPLE, config=cfg, limit=200)
    text = render(totals_table(res))
    assert_fits(text)
    g = res.summary["goodput"]
    assert f"{fmt(g['requests_per_s'], 3)} ({fmt(100 * g['attainment'], 1)}% attained)" in text


def test_planner_replica_table_fits(narrow):
    res = runner.invoke(app, ["run", "-t", str(SAMPLE), "-w", "2", "--limit", "300", "--planner"])
    assert res.exit_code == 0, res.output
    assert "planner: replica timeline" in res.stdout
    assert_fits(res.stdout)


def test_hardware_list_and_show_fit(narrow):
    res = runner.invoke(app, ["hardware", "list"])
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    from dynosim.hardware.catalog import BACKENDS, model_names, system_names, version_slots

    words = tokens(res.stdout)
    for name in system_names():
        assert name in words
        for b in BACKENDS:
            slots = version_slots(name, b)
            if slots:
                assert slots["current"] in words, (name, b)
    # a model id may fold onto a second line, but all of it is there
    flat = res.stdout.replace("│", "").replace(" ", "").replace("\n", "")
    for name in model_names():
        assert name.replace(" ", "") in flat

    res = runner.invoke(app, ["hardware", "show", "--model", "Qwen/Qwen3-235B-A22B", "--system", "h200_sxm",
                              "--tp", "8", "--ep", "8"])
    assert res.exit_code == 0, res.output
    assert_fits(res.stdout)
    assert re.search(r"[\d,]+ tokens = [\d,]+ blocks of 64", res.stdout)  # the longest value, on one line


def test_trace_inspect_fits():
    from dynosim.traces.inspect import format_inspection, inspect_trace

    d = inspect_trace(SAMPLE)
    text = render(format_inspection(d))
    assert_fits(text)
    assert f"{int(d['isl']['max']):,}" in tokens(text)


def test_validate_comparison_table_fits():
    from dynosim.cli.validate import comparison_table
    from dynosim.validate.compare import compare

    measured = dynosim.run(SAMPLE, workers=2, limit=300).summary
    predicted = dynosim.run(SAMPLE, workers=3, limit=300).summary
    table = compare(measured, predicted)
    text = render(comparison_table(table))
    assert_fits(text)
    words = tokens(text)
    for _, row in table.iterrows():
        nd = row_decimals([row["measured"], row["predicted"]], 3)
        assert fmt(row["measured"], nd) in words and fmt(row["predicted"], nd) in words, row["label"]


def test_regress_table_fits_with_long_case_names():
    from dynosim.cli.sweep import regress_table
    from dynosim.sweeps.regress import RegressReport

    rows = [{"case": "round-robin-8-workers-x4-with-a-long-name", "metric": m, "baseline": b, "current": c,
             "change": (c - b) / b, "tolerance": 0.01, "status": "REGRESSED" if c > b * 1.01 else "ok"}
            for m, b, c in (("e2e_p90", 13940.322, 14900.5), ("output_tps_per_gpu", 448.577, 448.577),
                            ("prefix_reuse", 0.127, 0.127))]
    report = RegressReport(pd.DataFrame(rows), 1, [])
    text = render(regress_table(report, 1))
    assert_fits(text)
    words = tokens(text)
    assert {"13,940", "14,900", "448.6", "0.127", "+6.89%", "REGRESSED", "output_tps_per_gpu"} <= words
    assert "round-robin-8-workers-x4-with-a-long-name" in text.replace("│", "").replace(" ", "").replace("\n", "")
