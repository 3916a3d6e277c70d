"""Results you can trust (issue 12): a sweep folder never mixes inputs, a failing point or a killed sweep loses
nothing and leaves nothing running, and bad input is one `error:` line before any work."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from dynosim.cli import app
from dynosim.sweeps.runner import PointError
from dynosim.sweeps.spec import SweepSpec, expand
from dynosim.sweeps.store import MANIFEST, StoreError
from dynosim.sweeps.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "examples" / "traces" / "conversation_1k.jsonl"
PROFILE = ROOT / "dynosim" / "profiles" / "h200_llama3.1-8b-fp8_vllm.yaml"
ONE = dict(gpu_budget=2, modes=["agg"], router_modes=["kv"], arrival_speedups=[1.0])
FOUR = dict(gpu_budget=2, modes=["agg"], router_modes=["kv", "round-robin"], arrival_speedups=[1.0, 4.0])


def _head(path: Path, n: int) -> Path:
    path.write_text("".join(TRACE.read_text().splitlines(keepends=True)[:n]))
    return path


def _strip(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_s"]).reset_index(drop=True)


def _cli(*args: str):
    return CliRunner().invoke(app, ["sweep", "--executor", "serial", "--no-report", *args], env={"COLUMNS": "300"})


# ---- 1. a results folder holds the results of one input --------------------------------------------------------

def test_a_folder_refuses_results_of_another_trace_limit_or_edited_trace(tmp_path):
    """Point ids hash the config only: without the manifest a resume into the same folder took every point of
    another trace (or limit) from the store and wrote the old frontier."""
    spec, out = SweepSpec(**ONE), tmp_path / "o"
    first = sweep(TRACE, spec, out, executor="serial", limit=40)
    assert first.ran == 1 and json.loads((out / MANIFEST).read_text())["limit"] == 40
    assert sweep(TRACE, spec, out, executor="serial", limit=40).ran == 0          # same inputs: resumes
    other = _head(tmp_path / "base50.jsonl", 50)
    with pytest.raises(StoreError, match=rf"--out {out} holds results of another input \(trace digest differs: "
                                         rf"\w{{12}} in the folder, \w{{12}} now, trace {other}\); use --fresh"):
        sweep(other, spec, out, executor="serial", limit=40)
    with pytest.raises(StoreError, match=r"\(--limit differs: 40 in the folder, 30 now\)"):
        sweep(TRACE, spec, out, executor="serial", limit=30)
    # the same trace, moved: its content is what counts
    moved = shutil.copy(TRACE, tmp_path / "moved.jsonl")
    assert sweep(moved, spec, out, executor="serial", limit=40).ran == 0
    # a trace edited between a kill and the resume (a row inside the limit changed)
    edited = Path(moved)
    rows = edited.read_text().splitlines(keepends=True)
    rows[3] = rows[3].replace('"output_length": ', '"output_length": 1')
    edited.write_text("".join(rows))
    with pytest.raises(StoreError, match="trace digest differs"):
        sweep(edited, spec, out, executor="serial", limit=40)
    # --fresh starts over: what it writes is what a new folder gets
    again = sweep(edited, spec, out, executor="serial", limit=40, fresh=True)
    new = sweep(edited, spec, tmp_path / "new", executor="serial", limit=40)
    assert again.ran == 1
    pd.testing.assert_frame_equal(_strip(again.results), _strip(new.results))
    assert not _strip(again.results).equals(_strip(first.results))


def test_a_folder_refuses_a_changed_timing_profile_and_keeps_ids_stable(tmp_path):
    prof = shutil.copy(PROFILE, tmp_path / "prof.yaml")
    spec = SweepSpec(**ONE, engine={"timing": "interpolated", "timing_profile": str(prof)})
    ids = [p.id for p in expand(spec)]
    out = tmp_path / "o"
    sweep(TRACE, spec, out, executor="serial", limit=30)
    assert list(json.loads((out / MANIFEST).read_text())["files"]) == [f"timing_profile {prof}"]
    text = Path(prof).read_text()
    Path(prof).write_text(text.replace("ms: [19.5,", "ms: [29.5,"))
    with pytest.raises(StoreError, match=rf"\(timing_profile {prof} digest differs: \w{{12}} in the folder"):
        sweep(TRACE, spec, out, executor="serial", limit=30)
    assert [p.id for p in expand(spec)] == ids                 # the ids do not move: the manifest guards them
    Path(prof).write_text(text)
    assert sweep(TRACE, spec, out, executor="serial", limit=30).ran == 0


def test_results_without_a_manifest_are_not_trusted(tmp_path):
    out = tmp_path / "o"
    sweep(TRACE, SweepSpec(**ONE), out, executor="serial", limit=20)
    (out / MANIFEST).unlink()                   # a folder written before manifests: its inputs are unknown
    with pytest.raises(StoreError, match="without a record of their inputs"):
        sweep(TRACE, SweepSpec(**ONE), out, executor="serial", limit=20)


def test_cli_names_the_mixed_input_and_fresh_starts_over(tmp_path):
    other = _head(tmp_path / "base50.jsonl", 50)
    common = ["--budget", "2", "--mode", "agg", "--router-mode", "kv", "--load", "1", "--out", str(tmp_path / "o")]
    r = _cli("--trace", str(TRACE), "--limit", "40", *common)
    assert r.exit_code == 0, r.output
    r = _cli("--trace", str(other), *common)
    assert r.exit_code == 2, r.output
    assert "error: --out" in r.output and "holds results of another input (trace digest differs" in r.output
    assert "ran 0 point(s)" not in r.output and "Traceback" not in r.output
    r = _cli("--trace", str(other), "--fresh", *common)
    assert r.exit_code == 0, r.output
    assert "ran 1 point(s), 0 from the store" in r.output.replace("\n", " ")


# ---- 7. a point that raises ---------------------------------------------------------------------------------------

def _boom_at_x4(monkeypatch):
    import dynosim.sim.simulation as simulation

    real = simulation.simulate

    def simulate(trace, cfg, *a, **kw):
        if cfg.arrival_speedup == 4.0 and cfg.router_mode == "round-robin":
            raise ValueError("boom")
        return real(trace, cfg, *a, **kw)

    monkeypatch.setattr(simulation, "simulate", simulate)


@pytest.mark.parametrize("executor,jobs", [("serial", None), ("local", 2)])
def test_a_point_that_raises_is_named_and_the_finished_points_stay(tmp_path, monkeypatch, executor, jobs):
    if executor == "local" and multiprocessing.get_start_method() != "fork":
        pytest.skip("the patched simulator reaches pool workers only when they are forked")
    _boom_at_x4(monkeypatch)
    spec, out = SweepSpec(**FOUR), tmp_path / "o"
    with pytest.raises(PointError, match=r"^point agg 2xTP1 round-robin ×4: ValueError: boom$"):
        sweep(TRACE, spec, out, executor=executor, jobs=jobs, limit=30)
    lines = (out / "results.jsonl").read_text().splitlines()
    # serial stops at the failing point (the 4th); the pool lets the points already running finish
    assert 3 <= len(lines) if executor == "serial" else 1 <= len(lines)
    assert all(json.loads(x)["config"] != "agg 2xTP1 round-robin" or json.loads(x)["load"] != 4.0 for x in lines)
    monkeypatch.undo()
    res = sweep(TRACE, spec, out, executor="serial", limit=30)       # the rest resumes
    assert res.ran == 4 - len(lines)


def test_cli_reports_a_failing_point_as_an_error_line(tmp_path, monkeypatch):
    _boom_at_x4(monkeypatch)
    r = _cli("--trace", str(TRACE), "--limit", "30", "--budget", "2", "--mode", "agg", "--load", "1,4",
             "--out", str(tmp_path / "o"))
    assert r.exit_code == 2, r.output
    assert "error: point agg 2xTP1 round-robin ×4: ValueError: boom" in r.output
    assert "finished point(s) are kept" in r.output and "Traceback" not in r.output


# ---- 3. killing a sweep kills its workers ---------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        kids = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(x) for x in (task / "children").read_text().split()]
        return kids + [g for k in kids for g in _children(k)]


def _alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except ImportError:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess: gone
        return False


def _start_pool_sweep(tmp_path: Path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(gpu_budget=4, modes=["agg"], router_modes=["kv", "round-robin"],
                                    arrival_speedups=[1.0, 2.0, 4.0, 8.0])))
    out = tmp_path / "o"
    with open(tmp_path / "stderr.txt", "w") as err:          # a file, not a pipe: orphans could hold a pipe open
        proc = subprocess.Popen([sys.executable, "-m", "dynosim.cli", "sweep", "--trace", str(TRACE), "--spec",
                                 str(spec), "--limit", "600", "--jobs", "2", "--no-report", "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "COLUMNS": "200"})
    kids: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(kids) < 2:
        kids = _children(proc.pid)
        time.sleep(0.05)
    if len(kids) < 2:
        proc.kill()
        pytest.fail(f"the pool's workers must be running: {(tmp_path / 'stderr.txt').read_text()}")
    time.sleep(0.5)                                                   # the workers are inside their points
    return proc, kids, out


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The processes still alive after ``seconds``; killed, so a failing test leaves nothing behind."""
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    survivors = [p for p in pids if _alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    return survivors


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigkilled_sweep_takes_its_pool_workers_along(tmp_path):
    """They used to stay alive under PID 1 for minutes, each holding its trace and simulation in memory."""
    proc, kids, out = _start_pool_sweep(tmp_path)
    proc.kill()
    proc.wait()
    survivors = _gone_within(kids, 5.0)
    assert not survivors, f"pool workers {survivors} outlived the killed sweep"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_the_pool_cleanly_and_keeps_what_finished(tmp_path):
    proc, kids, out = _start_pool_sweep(tmp_path)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        survivors = _gone_within(kids, 5.0)
    err = (tmp_path / "stderr.txt").read_text()
    assert not survivors
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "run the same command to resume" in err.replace("\n", " ")
    assert "Traceback" not in err
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True) if (out / "results.jsonl").exists() else []
    assert all(x.endswith(b"\n") and json.loads(x) for x in lines)       # every recorded point whole


# ---- 4. a torn last line is a note, not an error --------------------------------------------------------------------

def test_cli_notes_a_torn_last_line_and_reruns_that_point(tmp_path):
    common = ["--trace", str(TRACE), "--limit", "20", "--budget", "2", "--mode", "agg", "--router-mode", "kv",
              "--load", "1,4", "--out", str(tmp_path / "o")]
    assert _cli(*common).exit_code == 0
    path = tmp_path / "o" / "results.jsonl"
    first, second = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(first + second[:40])                        # killed while writing the second point
    r = _cli(*common)
    assert r.exit_code == 0, r.output
    out = r.output.replace("\n", " ")
    assert "note: dropped the torn last line of" in out and "ran 1 point(s), 1 from the store" in out
    assert path.read_bytes().count(b"\n") == 2


# ---- 5. the output location is checked before any point runs ------------------------------------------------------

def _no_points(monkeypatch):
    import dynosim.sweeps.sweep as sweep_module

    def execute(*a, **kw):
        raise AssertionError("a point ran")

    monkeypatch.setattr(sweep_module, "execute", execute)


def test_out_that_is_a_file_or_under_one_or_unwritable_fails_before_any_point(tmp_path, monkeypatch):
    _no_points(monkeypatch)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match=rf"--out {f}: exists and is not a directory"):
        sweep(TRACE, SweepSpec(**ONE), f, executor="serial", limit=20)
    with pytest.raises(StoreError, match=rf"--out {f / 'sub'}: cannot create the directory"):
        sweep(TRACE, SweepSpec(**ONE), f / "sub", executor="serial", limit=20)
    import dynosim.sweeps.store as store

    with monkeypatch.context() as m:                       # as root every directory is writable: pretend
        m.setattr(store.os, "access", lambda *a, **kw: False)
        with pytest.raises(StoreError, match=rf"--out {tmp_path / 'ro'}: not writable"):
            sweep(TRACE, SweepSpec(**ONE), tmp_path / "ro", executor="serial", limit=20)
    for out in (f, f / "sub"):
        r = _cli("--trace", str(TRACE), "--limit", "20", "--budget", "2", "--mode", "agg", "--out", str(out))
        assert r.exit_code == 2 and f"error: --out {out}: " in r.output and "Traceback" not in r.output, r.output


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_cli_an_unwritable_out_fails_before_any_point(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = _cli("--trace", str(TRACE), "--limit", "20", "--budget", "2", "--mode", "agg", "--out", str(ro))
    finally:
        ro.chmod(0o700)
    assert r.exit_code == 2 and f"error: --out {ro}: not writable" in r.output, r.output


# ---- 6. error lines, not tracebacks ---------------------------------------------------------------------------------

def test_cli_bad_flags_are_error_lines(tmp_path):
    out = str(tmp_path / "o")
    for args, msg in ((["--budget", "1", "--mode", "disagg"], "no deployment of the grid can run"),
                      (["--jobs", "-1"], "--jobs must be ≥ 1, got -1"),
                      (["--jobs", "0"], "--jobs must be ≥ 1, got 0"),
                      (["--spec", str(tmp_path)], f"--spec {tmp_path}: not a file")):
        r = CliRunner().invoke(app, ["sweep", "--trace", str(TRACE), "--limit", "20", *args, "--out", out],
                               env={"COLUMNS": "300"})
        assert r.exit_code == 2 and f"error: {msg}" in r.output and "Traceback" not in r.output, (args, r.output)
    r = _cli("--trace", str(TRACE.parent), "--out", out)
    assert r.exit_code == 2 and f"error: --trace {TRACE.parent}: is a directory, not a file" in r.output, r.output
    bad = tmp_path / "spec.yaml"
    bad.write_bytes(b"gpu_budget: \xff\n")
    r = _cli("--trace", str(TRACE), "--spec", str(bad), "--out", out)
    assert r.exit_code == 2 and f"error: --spec {bad}: cannot read it" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_library_bad_inputs_raise_plain_errors(tmp_path):
    """The library said KeyError: 'load' for a grid with no point (the CLI guards it; a notebook did not)."""
    with pytest.raises(ValueError, match="no deployment of the grid can run"):
        sweep(TRACE, SweepSpec(gpu_budget=1, modes=["disagg"]), tmp_path / "o", executor="serial")
    with pytest.raises(ValueError, match="not a file"):
        sweep(TRACE.parent, SweepSpec(**ONE), tmp_path / "o", executor="serial")
    from dynosim.sweeps.runner import execute

    for jobs in (0, -1):
        with pytest.raises(ValueError, match=r"jobs must be an integer >= 1"):
            execute(expand(SweepSpec(**ONE)), str(TRACE), jobs=jobs)
