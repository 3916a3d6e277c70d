"""benchmarks/measure_vs_aiperf.py: its verdict (3% target, misses named, spread beside) and the offline
tokenizer snapshot it hands aiperf. The live run itself (vLLM + aiperf) is the benchmark, not a test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("measure_vs_aiperf", ROOT / "benchmarks" / "measure_vs_aiperf.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def figures(ttft: float, itl: float, e2e: float, tps: float) -> dict:
    return {"TTFT mean (ms)": ttft, "ITL mean (ms)": itl, "E2E mean (ms)": e2e, "output tokens/s": tps,
            "requests": 100.0, "input tokens mean": 600.0, "output tokens mean": 20.0}


def test_within_3_percent_passes_and_a_miss_is_named_with_the_spread():
    lines: list[str] = []
    same = {"aiperf": [figures(100, 20, 500, 50)], "dynosim": [figures(102, 20.4, 505, 49.5)]}
    assert bench.report(same, lines.append) == []
    assert all("MISSED" not in ln for ln in lines)

    lines.clear()
    off = {"aiperf": [figures(100, 20, 500, 50), figures(140, 20, 500, 50)],
           "dynosim": [figures(130, 20, 500, 50), figures(130, 20, 500, 50)]}
    missed = bench.report(off, lines.append)
    assert missed == ["TTFT mean (ms): dynosim 130.00 vs aiperf 120.00 (+8.3%), round-to-round spread up to 33.3%"]
    ttft = next(ln for ln in lines if ln.startswith("TTFT"))
    assert "1.083" in ttft and "33.3%" in ttft and "MISSED, inside the noise" in ttft

    lines.clear()
    steady = {"aiperf": [figures(100, 20, 500, 50)] * 2, "dynosim": [figures(100, 30, 500, 50)] * 2}
    assert bench.report(steady, lines.append)[0].startswith("ITL mean (ms): dynosim 30.00 vs aiperf 20.00 (+50.0%)")
    assert "MISSED, outside the noise" in next(ln for ln in lines if ln.startswith("ITL"))


def test_the_tokenizer_is_laid_out_as_an_offline_hub_snapshot(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "chat_template.jinja"):
        (model / name).write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    repo = bench.tokenizer_as_hub_snapshot(model, tmp_path / "hf")
    assert repo == "dynosim/tiny-llama"
    entry = tmp_path / "hf" / "hub" / "models--dynosim--tiny-llama"
    rev = (entry / "refs" / "main").read_text()
    snap = entry / "snapshots" / rev
    assert sorted(p.name for p in snap.iterdir()) == ["chat_template.jinja", "config.json", "tokenizer.json",
                                                      "tokenizer_config.json"]   # no weights
    env = bench.aiperf_env(tmp_path / "hf")
    assert env["HF_HOME"] == str(tmp_path / "hf") and env["HF_HUB_OFFLINE"] == "1"
