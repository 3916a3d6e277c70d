"""benchmarks/fidelity_cpu.py states targets, so it must fail when it misses one (issue 12, live item 3).

The live parts (vLLM, the tiny model, `dynosim calibrate`/`validate`) are replaced by a stand-in that writes
the `comparison.json` each validate run would; what is tested is the benchmark's own arithmetic and verdict:
three runs per window, the measured run-to-run spread beside the error, and the exit status.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("fidelity_cpu", ROOT / "benchmarks" / "fidelity_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ensure_vllm_venv", lambda: "/nonexistent/python")
    monkeypatch.setattr(mod, "ensure_tiny_model", lambda py: (Path("/nonexistent/model"), {"params": 1}))
    return mod


def metric(key: str, measured: float, predicted: float) -> dict:
    absolute = key == "prefix_reuse"
    err = predicted - measured if absolute else predicted / measured - 1
    return {"metric": key, "measured": measured, "predicted": predicted, "error": err,
            "error_kind": "abs" if absolute else "rel"}


def fake_dynosim(runs: dict[str, list[dict[str, tuple[float, float]]]], calls: list):
    """``runs[window_index]`` = per run, metric -> (measured, predicted)."""
    count: dict[str, int] = {}

    def dynosim(*args: str) -> subprocess.CompletedProcess:
        calls.append(args)
        if args[0] == "validate":
            out = Path(args[args.index("--out") + 1])
            k = out.name.split("_")[0].removeprefix("validate")
            i = count.get(k, 0)
            count[k] = i + 1
            vals = runs[k][i]
            out.mkdir(parents=True)
            (out / "comparison.json").write_text(json.dumps({"metrics": [
                metric(key, *vals.get(key, (10.0, 10.0))) for key in
                ("output_tps", "itl_mean", "itl_p50", "ttft_p50", "ttft_p90", "e2e_mean", "prefix_reuse")]}))
            return subprocess.CompletedProcess(args, 1, "table", "")
        return subprocess.CompletedProcess(args, 0, "ok", "")
    return dynosim


def run_main(bench, monkeypatch, tmp_path, runs, capsys) -> tuple[int, str, list]:
    calls: list = []
    monkeypatch.setattr(bench, "dynosim", fake_dynosim(runs, calls))
    monkeypatch.setattr(sys, "argv", ["fidelity_cpu.py", "--out", str(tmp_path), "--slices", "3000:160,6000:160"])
    rc = bench.main()
    return rc, capsys.readouterr().out, calls


def test_every_target_met_exits_0_and_each_window_is_measured_three_times(bench, monkeypatch, tmp_path, capsys):
    good = {"output_tps": (50.0, 50.5), "itl_mean": (20.0, 20.4), "ttft_p50": (100.0, 95.0),
            "prefix_reuse": (0.1, 0.1)}
    rc, out, calls = run_main(bench, monkeypatch, tmp_path, {"0": [good] * 3, "1": [good] * 3}, capsys)
    assert rc == 0, out
    assert sum(1 for c in calls if c[0] == "validate") == 6
    assert "targets met on every window: YES" in out
    doc = json.loads((tmp_path / "fidelity.json").read_text())
    assert doc["repeats"] == 3 and set(doc["windows"]) == {"3000:160", "6000:160"}


def test_a_missed_target_exits_1_and_says_whether_it_is_inside_the_noise(bench, monkeypatch, tmp_path, capsys):
    good = {"output_tps": (50.0, 50.0), "ttft_p50": (100.0, 100.0), "prefix_reuse": (0.1, 0.1)}
    # window 0: ITL measured 20, 22, 24 (spread 20%), predicted 20.6: -6.4% error, inside the noise
    # window 1: ITL measured 20, 20.2, 20.4 (spread 2%), predicted 16: -20.8% error, outside the noise
    w0 = [{**good, "itl_mean": (m, 20.6)} for m in (20.0, 22.0, 24.0)]
    w1 = [{**good, "itl_mean": (m, 16.0)} for m in (20.0, 20.2, 20.4)]
    rc, out, _ = run_main(bench, monkeypatch, tmp_path, {"0": w0, "1": w1}, capsys)
    assert rc == 1, out
    assert "targets met on every window: NO" in out
    assert "missed: itl_mean on window 3000:160: error -6.4%, run-to-run spread 18.2% (inside the noise)" in out
    assert "missed: itl_mean on window 6000:160: error -20.8%, run-to-run spread 2.0% (outside the noise)" in out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("itl_mean")]
    assert "20.00, 22.00, 24.00" in lines[0] and "MISSED, inside the noise" in lines[0]
    assert "MISSED, outside the noise" in lines[1]


def test_a_failed_live_run_exits_1(bench, monkeypatch, tmp_path, capsys):
    def dynosim(*args):
        return subprocess.CompletedProcess(args, 3 if args[0] == "validate" else 0, "", "lost requests")
    monkeypatch.setattr(bench, "dynosim", dynosim)
    monkeypatch.setattr(sys, "argv", ["fidelity_cpu.py", "--out", str(tmp_path)])
    assert bench.main() == 1
    assert "validate exit 3" in capsys.readouterr().out
