"""`validate` / `calibrate` against bad input and misbehaving servers: `error:` lines, never tracebacks or silence.

Issue 12 ("Results you can trust"), live-validation items 1 and 2: bad flags
and files are one `error:` line naming the flag and the file (exit 2); an
unreachable endpoint is named at once (tests/test_validate_replay.py); a
stream that stalls fails after the idle timeout with that reason instead of
holding the run for the 600 s request limit; progress is printed while the
run waits; Ctrl-C during a replay writes what was measured (exit 3). The
servers are the in-process fakes of tests/live/fake_server.py on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import load_rows, write_trace
from dynosim.cli import app
from dynosim.config import RouterParams, RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.validate import workflow
from dynosim.validate.calibrate import CalibrationError, CalibrationPlan, calibrate
from dynosim.validate.workflow import ValidateOptions, validate
from live.fake_server import FakeOpenAIServer, Script, fleet_of, free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fake-model"
TBS, BS = 64, 32
runner = CliRunner()


def script(**kw) -> Script:
    return Script(**{"ttft_ms": 10.0, "itl_ms": 5.0, "block_size": BS, **kw})


def rows(n: int, out: int = 4, gap_ms: int = 20) -> list[dict]:
    return [{"timestamp": gap_ms * i, "input_length": 2 * TBS, "output_length": out, "hash_ids": [100 + i % 2, 200 + i]}
            for i in range(n)]


def cli(*args: str):
    res = runner.invoke(app, list(args))
    return res, " ".join(res.output.split())   # rich wraps long lines


def validate_args(trace: Path, out: Path, *more: str) -> list[str]:
    return ["validate", "--trace", str(trace), "--timing", "fixed", "--trace-block-size", str(TBS),
            "--block-size", str(BS), "--out", str(out), *more]


@pytest.fixture
def quick_plot(monkeypatch):
    monkeypatch.setattr(workflow, "plot", lambda table, mdf, pdf, path, title="": path.write_bytes(b"stub"))


# ---------------------------------------------------------------------------
# item 1: bad input is an `error:` line naming the flag (and the file), exit 2


def test_kv_events_that_is_not_an_endpoint_is_named_before_anything_runs(tmp_path):
    tp = write_trace(tmp_path / "t.jsonl", rows(2))
    t0 = time.perf_counter()
    # the endpoint is unreachable too: the flag is checked first, without a network round trip
    res, text = cli(*validate_args(tp, tmp_path / "o", "--endpoint", "http://127.0.0.1:9",
                                   "--kv-events", "notanendpoint"))
    assert res.exit_code == 2, res.output
    assert "error: --kv-events notanendpoint: not a ZMQ endpoint: expected tcp://HOST:PORT" in text
    assert "Traceback" not in res.output and time.perf_counter() - t0 < 10
    res, text = cli(*validate_args(tp, tmp_path / "o", "--endpoint", "http://127.0.0.1:9",
                                   "--kv-events", "tcp://127.0.0.1:99999"))
    assert res.exit_code == 2 and "error: --kv-events tcp://127.0.0.1:99999: port '99999'" in text


def test_kv_events_endpoint_that_cannot_be_bound_is_an_error_line(tmp_path):
    tp = write_trace(tmp_path / "t.jsonl", rows(2))
    with socket.socket() as busy, fleet_of(1, script) as fleet:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res, text = cli(*validate_args(tp, tmp_path / "o", "--endpoint", fleet.urls[0], "--served-model-name",
                                       MODEL, "--kv-events", f"tcp://127.0.0.1:{port}"))
        assert fleet.servers[0].requests == []
    assert res.exit_code == 2, res.output
    assert f"error: --kv-events: cannot bind the KV event listener to tcp://127.0.0.1:{port}" in text
    assert "Traceback" not in res.output


def test_router_option_that_is_broken_json_is_an_error_line(tmp_path):
    tp = write_trace(tmp_path / "t.jsonl", rows(2))
    res, text = cli("run", "--trace", str(tp), "--trace-block-size", str(TBS), "--router-mode", "thompson",
                    "--router-option", "params={bad json")
    assert res.exit_code == 2, res.output
    assert "error: --router-option params: not valid JSON (Expecting property name enclosed in double quotes " \
           "at character 2): {bad json" in text
    assert "Traceback" not in res.output
    # a plain string value is still a string
    res, text = cli("run", "--trace", str(tp), "--trace-block-size", str(TBS), "--router-mode", "thompson",
                    "--router-option", "variant=generalized", "--json")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name,content,problem", [
    ("bad.yaml", "prefill: [1, 2\ndecode: {\n", "not valid YAML (expected ',' or ']', but got ':' at line 2, "
                                                "column 7)"),
    ("bad.json", "{bad", "not valid JSON (Expecting property name enclosed in double quotes"),
    ("dir.yaml", None, "is a directory, not a profile file"),
    ("list.yaml", "- 1\n- 2\n", "expected a mapping at the top level"),
    ("notables.yaml", "engine: {block_size: 32}\nprefill: 3\n", "expected prefill.{new_tokens,ms}"),
])
def test_a_broken_timing_profile_is_named_before_the_live_run(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    tp = write_trace(tmp_path / "t.jsonl", rows(2))
    with fleet_of(1, script) as fleet:
        res, text = cli(*validate_args(tp, tmp_path / "o", "--endpoint", fleet.urls[0], "--served-model-name",
                                       MODEL, "--router-mode", "round-robin", "--timing", "interpolated",
                                       "--timing-profile", str(path)))
        assert fleet.servers[0].requests == []   # nothing was sent
    assert res.exit_code == 2, res.output
    assert f"error: --timing-profile: profile {path}: {problem}" in text
    assert "Traceback" not in res.output


@pytest.mark.parametrize("content,problem", [
    (None, "not a file"),
    ("workers: [1\nrouter_mode: kv\n", "not valid YAML/JSON: expected ',' or ']', but got ':' at line 2, column 12"),
    ("- 1\n", "expected a mapping of RunConfig fields"),
])
def test_a_broken_config_file_is_named(tmp_path, content, problem):
    path = tmp_path / "deploy.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    tp = write_trace(tmp_path / "t.jsonl", rows(2))
    res, text = cli(*validate_args(tp, tmp_path / "o", "--endpoint", "http://127.0.0.1:9", "--config", str(path)))
    assert res.exit_code == 2, res.output
    assert f"error: --config {path}: {problem}" in text and "Traceback" not in res.output


# ---------------------------------------------------------------------------
# item 2: a stalled stream fails after the idle timeout; waiting is never silent


def rr_config(workers: int = 1) -> RunConfig:
    return RunConfig(workers=workers, router_mode="round-robin", trace_block_size=TBS, seed=3,
                     router=RouterParams(kv_events=False),
                     engine=MockerArgs(timing="fixed", timing_params={"prefill_ms": 10.0, "decode_ms": 5.0},
                                       block_size=BS))


def test_a_stalled_stream_fails_after_the_idle_timeout_and_progress_is_printed(tmp_path, quick_plot):
    trace = load_rows(tmp_path, rows(6), tbs=TBS)
    said: list[str] = []
    with fleet_of(1, script) as fleet:
        fleet.inject(0, "stall", after_tokens=2)   # the first request stops after 2 tokens, connection open
        t0 = time.perf_counter()
        res = validate(trace, rr_config(), ValidateOptions(out=tmp_path / "o", model=MODEL, endpoints=fleet.urls,
                                                           idle_timeout_s=1.5, progress_every_s=0.3,
                                                           tolerance=1e9, reuse_tolerance=1.0), say=said.append)
        took = time.perf_counter() - t0
    assert took < 30                              # the request limit is 600 s
    assert res.exit_code == 3 and not res.complete
    r = res.measured["requests"]
    assert r["completed"] == 5 and r["failed"] == 1
    (reason, n), = res.measured["failure_reasons"].items()
    assert n == 1 and "no data for 1.5 s mid-stream (idle timeout); 2 tokens in 2 chunks received" in reason
    mdf = pd.read_csv(tmp_path / "o" / "measured" / "requests.csv")
    assert mdf["failure"].str.contains("idle timeout").sum() == 1
    # while the stalled request was the only one left, the run said so instead of going quiet
    beats = [m for m in said if "in flight" in m]
    assert beats, said
    assert any("5/6 requests finished (0 failed), 1 in flight, 0 not sent yet; the oldest in flight for" in m
               for m in beats), beats
    assert any("idle timeout 1.5 s" in m for m in said)


def test_cli_idle_timeout_flag(tmp_path, quick_plot):
    tp = write_trace(tmp_path / "t.jsonl", rows(4))
    with fleet_of(1, script) as fleet:
        fleet.inject(0, "stall_keepalive", after_tokens=1)   # SSE comments do not count as data
        t0 = time.perf_counter()
        res, text = cli(*validate_args(tp, tmp_path / "o", "--endpoint", fleet.urls[0], "--served-model-name",
                                       MODEL, "--router-mode", "round-robin", "--idle-timeout", "1",
                                       "--tolerance", "1e9", "--reuse-tolerance", "1"))
        took = time.perf_counter() - t0
    assert res.exit_code == 3, res.output
    assert took < 30 and "INCOMPLETE: requests lost" in text
    assert "failed ×1: POST" in text and "no data for 1 s mid-stream (idle timeout)" in text
    res, text = cli(*validate_args(tp, tmp_path / "o", "--endpoint", "http://127.0.0.1:9", "--idle-timeout", "-1"))
    assert res.exit_code == 2 and "error: --idle-timeout must be a number of seconds >= 0" in text


def test_calibrate_does_not_wait_minutes_on_a_stalled_stream():
    plan = CalibrationPlan.quick(prefill_lengths=(32,), prefill_repeats=1, prefill_batches=(1,),
                                 prefill_batch_repeats=1, decode_batches=(1,), decode_contexts=(64,),
                                 decode_tokens=8, decode_repeats=1, min_window_steps=4)
    said: list[str] = []

    async def main():
        async with FakeOpenAIServer(script=script()) as srv:
            srv.inject("stall", after_tokens=1)       # the warm-up request stalls
            t0 = time.monotonic()
            try:
                await calibrate(srv.base_url, MODEL, plan, progress=said.append, idle_timeout_s=1.5,
                                progress_every_s=0.4)
            finally:
                took = time.monotonic() - t0
            return took

    with pytest.raises(CalibrationError) as ei:
        asyncio.run(main())
    msg = str(ei.value)
    assert "the warm-up request" in msg and "failed (a timeout is not retried)" in msg
    assert "no data for 1.5 s mid-stream (idle timeout)" in msg
    assert any(m.startswith("  waiting on 1 request(s) (the warm-up request) for") and "silent for 1.5 s fails" in m
               for m in said), said


def test_cli_calibrate_idle_timeout(tmp_path):
    with fleet_of(1, script) as fleet:
        fleet.inject(0, "stall", after_tokens=1)
        t0 = time.perf_counter()
        res, text = cli("calibrate", "--endpoint", fleet.urls[0], "--served-model-name", MODEL, "--quick",
                        "--idle-timeout", "1", "--out", str(tmp_path / "p.yaml"))
        took = time.perf_counter() - t0
    assert res.exit_code == 3, res.output
    assert took < 30 and "error: calibration of" in text and "(idle timeout)" in text
    assert not (tmp_path / "p.yaml").exists()


# ---------------------------------------------------------------------------
# item 2: Ctrl-C during a replay keeps what was measured


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_during_validate_writes_what_was_measured(tmp_path):
    """A real process, a real SIGINT: sending stops, in-flight requests are cancelled, the files are written."""
    # 30 requests of 40 tokens at 25 ms a token, 100 ms apart: about 4 s of replay; interrupted after ~1 s
    tp = write_trace(tmp_path / "t.jsonl", rows(30, out=40, gap_ms=100))
    out = tmp_path / "o"
    with fleet_of(1, lambda: script(itl_ms=25.0)) as fleet:
        proc = subprocess.Popen([sys.executable, "-m", "dynosim.cli",
                                 *validate_args(tp, out, "--endpoint", fleet.urls[0], "--served-model-name", MODEL,
                                                "--router-mode", "round-robin")],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "COLUMNS": "200"})
        lines: list[str] = []
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while not any("replaying 30 requests" in ln for ln in lines):
                assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
                time.sleep(0.05)
            while fleet.servers[0].counters["request_success"] < 3:   # some finished, some in flight
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
        sent = sum(len(s.requests) for s in fleet.servers)
    text = " ".join("".join(lines).split())
    assert rc == 3, text
    assert "interrupted (SIGINT): no more requests are sent" in text
    assert "INCOMPLETE: interrupted (what was measured is written)" in text and "Traceback" not in text
    assert sent < 30                                   # sending stopped
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["complete"] is False and doc["exit_code"] == 3
    assert doc["aborted"] == "interrupted by the user (SIGINT)"
    s = json.loads((out / "measured" / "summary.json").read_text())
    assert s["complete"] is False and s["aborted"] == "interrupted by the user (SIGINT)"
    r = s["requests"]
    assert r["total"] == 30 and r["completed"] >= 1 and r["completed"] + r["failed"] + r["not_sent"] == 30
    mdf = pd.read_csv(out / "measured" / "requests.csv")
    assert (mdf["status"] == "done").sum() == r["completed"]
    assert mdf["failure"].str.contains("in flight when the run was aborted").sum() >= 1
