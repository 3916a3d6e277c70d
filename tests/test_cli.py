"""End-to-end tests of the command line (typer), as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from dynosim.cli import app
from dynosim.router.policies import POLICIES

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "traces" / "conversation_1k.jsonl"
runner = CliRunner()


def test_run_writes_summary_and_requests(tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--workers", "2", "--limit", "150",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "TTFT" in res.output and "prefix reuse ratio" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == {"total": 150, "completed": 150, "failed": 0, "unfinished": 0}
    assert summary["run"]["config"]["workers"] == 2
    df = pd.read_parquet(out / "requests.parquet")
    assert len(df) == 150 and set(df["worker"]) == {0, 1}
    assert (df["ttft_ms"] > 0).all()
    csv = pd.read_csv(out / "requests.csv")
    assert list(csv.columns) == list(df.columns)


def test_run_json_output_matches_api(tmp_path):
    import dynosim

    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--workers", "3", "--limit", "100", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    api = dynosim.run(SAMPLE, workers=3, limit=100).summary
    assert summary["ttft_ms"] == api["ttft_ms"]
    assert summary["output_tokens"] == api["output_tokens"]


def test_router_mode_and_engine_flags_take_effect():
    base = runner.invoke(app, ["run", "-t", str(SAMPLE), "-w", "2", "--limit", "120", "--json"])
    rnd = runner.invoke(app, ["run", "-t", str(SAMPLE), "-w", "2", "--limit", "120", "--json",
                              "--router-mode", "random", "--seed", "3"])
    nocache = runner.invoke(app, ["run", "-t", str(SAMPLE), "-w", "2", "--limit", "120", "--json",
                                  "--no-prefix-caching"])
    for r in (base, rnd, nocache):
        assert r.exit_code == 0, r.output
    b, r, n = (json.loads(x.stdout) for x in (base, rnd, nocache))
    assert b["run"]["config"]["router_mode"] == "round-robin"
    assert r["run"]["config"]["router_mode"] == "random"
    assert b["ttft_ms"]["mean"] != r["ttft_ms"]["mean"]
    assert b["prefix_reuse_ratio"] > 0 and n["prefix_reuse_ratio"] == 0


def test_malformed_trace_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n'
                   '{"timestamp": 5, "input_length": 10, "output_length": 2, "hash_ids": [1]\n')
    res = runner.invoke(app, ["run", "--trace", str(bad)])
    assert res.exit_code == 2
    assert "bad.jsonl" in res.output and "line 2" in res.output


def test_impossible_config_is_a_clear_error():
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--max-num-seqs", "9000"])
    assert res.exit_code == 2
    assert "max_num_seqs" in res.output
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--workers", "0"])
    assert res.exit_code == 2 and "workers" in res.output
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--router-mode", "nope"])
    assert res.exit_code == 2


def test_missing_trace_file():
    res = runner.invoke(app, ["run", "--trace", "/no/such/trace.jsonl"])
    assert res.exit_code == 2 and "trace not found" in res.output


def test_trace_inspect():
    res = runner.invoke(app, ["trace", "inspect", str(SAMPLE), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["n_requests"] == 1000
    assert 0.2 < d["reuse_bound_tokens"] < 0.25
    res = runner.invoke(app, ["trace", "inspect", str(SAMPLE)])
    assert res.exit_code == 0 and "reuse bound" in res.output


@pytest.mark.parametrize("mode", sorted(POLICIES))
def test_every_router_mode_runs_end_to_end(tmp_path, mode):
    trace = SAMPLE
    if mode == "direct":  # the trace names each request's worker
        rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:60]]
        trace = tmp_path / "direct.jsonl"
        trace.write_text("".join(json.dumps({**r, "worker_id": i % 3}) + "\n" for i, r in enumerate(rows)))
    res = runner.invoke(app, ["run", "-t", str(trace), "-w", "3", "--limit", "60", "--json", "--router-mode", mode])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["requests"]["completed"] == 60 and s["run"]["config"]["router_mode"] == mode
    if mode == "direct":
        out = tmp_path / "o2"
        runner.invoke(app, ["run", "-t", str(trace), "-w", "3", "--router-mode", "direct", "--out", str(out)])
        df = pd.read_parquet(out / "requests.parquet").sort_values("line")
        assert list(df["worker"]) == [i % 3 for i in range(60)]


def test_direct_mode_without_worker_hint_is_a_clear_error():
    res = runner.invoke(app, ["run", "-t", str(SAMPLE), "-w", "2", "--limit", "5", "--router-mode", "direct"])
    assert res.exit_code == 2 and "worker_id" in res.output and "line 1" in res.output


def test_trace_synth_writes_a_loadable_agentic_trace(tmp_path):
    out = tmp_path / "agentic.jsonl"
    res = runner.invoke(app, ["trace", "synth", str(out), "--sessions", "20", "--seed", "3"])
    assert res.exit_code == 0, res.output
    again = tmp_path / "again.jsonl"
    runner.invoke(app, ["trace", "synth", str(again), "--sessions", "20", "--seed", "3"])
    assert out.read_bytes() == again.read_bytes()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all("agent_hints" in r["nvext"] for r in rows)
    res = runner.invoke(app, ["run", "-t", str(out), "-w", "2", "--router-mode", "thompson", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["requests"]["completed"] == len(rows)
    bad = runner.invoke(app, ["trace", "synth", str(out), "--rate", "-1"])
    assert bad.exit_code == 2 and "rate" in bad.output


def test_failed_requests_exit_5_with_strict_json_unless_allowed(tmp_path):
    """All requests failing is said on the terminal and exits 5; summary.json stays strict JSON (null, not NaN);
    --allow-failures exits 0 with the same files."""
    args = ["run", "--trace", str(SAMPLE), "--limit", "20", "--num-gpu-blocks", "4", "--no-report"]
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a")])
    assert r.exit_code == 5, r.output
    assert "20 of 20 requests did not complete" in r.output and "needs" in r.output
    text = (tmp_path / "a" / "summary.json").read_text()
    assert "NaN" not in text
    s = json.loads(text)
    assert s["requests"]["failed"] == 20 and s["ttft_ms"]["p50"] is None
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "b"), "--allow-failures"])
    assert r.exit_code == 0, r.output


def test_out_is_checked_before_the_work_and_stale_outputs_go(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = CliRunner().invoke(app, ["run", "--trace", str(SAMPLE), "--limit", "20", "--out", str(afile)])
    assert r.exit_code == 2 and "error: --out:" in r.output and "not a directory" in r.output
    assert "replaying" not in r.output                   # nothing was simulated
    out = tmp_path / "o"
    out.mkdir()
    for stale in ("replicas.csv", "replicas.png", "timeline.png"):
        (out / stale).write_text("from an older run")
    r = CliRunner().invoke(app, ["run", "--trace", str(SAMPLE), "--limit", "20", "--timeline-points", "0",
                                 "--no-report", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not (out / "replicas.csv").exists() and not (out / "timeline.png").exists()
    r = CliRunner().invoke(app, ["run", "--trace", str(SAMPLE), "--limit", "5", "--seed", "-1"])
    assert r.exit_code == 2 and "--seed" in r.output
