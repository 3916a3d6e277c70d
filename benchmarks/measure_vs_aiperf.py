"""Does dynosim's live client measure what aiperf measures? The same trace slice, the same server, both clients.

    .venv/bin/python benchmarks/measure_vs_aiperf.py [--skip 3000] [--limit 120] [--out runs/aiperf]

1. The CPU build of vLLM and the tiny Llama (``dynosim.validate.local_vllm``:
   the venv in the cache directory, the model in .cache/tiny-llama), and
   aiperf (PyPI ``aiperf``, NVIDIA's benchmark client) in its own venv in the
   cache directory (``<cache>/venv-aiperf``), installed when missing.
2. A window of the Mooncake conversation trace, tokens ÷ 16 (trace block 32
   tokens) so it fits the tiny model.
3. For each client in turn, a fresh vLLM server (same flags as ``validate
   --launch vllm``: block 32, 4096 KV blocks, max 64 sequences; fresh, so both
   start with a cold prefix cache) replays the slice on its timestamps:
   - aiperf: ``aiperf profile --custom-dataset-type mooncake_trace
     --fixed-schedule --endpoint-type completions --streaming
     --extra-inputs ignore_eos:true --use-server-token-count``, prompts
     synthesised from ``hash_ids`` in blocks of 32 tokens with the model's
     tokenizer (laid out as an offline hub snapshot, see
     ``tokenizer_as_hub_snapshot``);
   - dynosim: ``dynosim validate --endpoint URL`` (round-robin over the one
     worker), its ``measured/summary.json``.
4. Prints the mean TTFT, ITL, E2E and output throughput of both, the ratio
   dynosim / aiperf, and the target: every ratio within 3% (DESIGN.md,
   "Fidelity": the measuring client agrees with aiperf within 3%).

Everything is measured in this one run. Exit status: 0 every ratio within the
target, 1 a miss (or a run that failed). The two replays run one after the
other on a shared 2-core machine, so part of any difference is the machine
moving between them; ``--rounds 2`` runs aiperf, dynosim, aiperf, dynosim and
prints each client's own round-to-round spread beside the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynosim.config import RunConfig  # noqa: E402
from dynosim.engines.mocker.config import MockerArgs  # noqa: E402
from dynosim.validate.local_vllm import cache_dir, ensure_tiny_model, ensure_vllm_venv  # noqa: E402
from dynosim.validate.servers import start_server, stop_all, wait_ready  # noqa: E402
from dynosim.validate.live_deployment import launch_specs  # noqa: E402
from dynosim.validate.workflow import ValidateOptions  # noqa: E402

AIPERF_VERSION = "0.13.0"
TARGET = 0.03
SERVED = "tiny-llama"
# (label, aiperf metric, dynosim summary path)
METRICS = (("TTFT mean (ms)", "time_to_first_token", ("ttft_ms", "mean")),
           ("ITL mean (ms)", "inter_token_latency", ("itl_ms", "mean")),
           ("E2E mean (ms)", "request_latency", ("e2e_ms", "mean")),
           ("output tokens/s", "output_token_throughput", ("throughput", "output_tokens_per_s")))


def ensure_aiperf() -> Path:
    venv = cache_dir() / "venv-aiperf"
    exe = venv / "bin" / "aiperf"
    if not exe.exists():
        print(f"installing aiperf=={AIPERF_VERSION} into {venv} …", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"aiperf=={AIPERF_VERSION}"], check=True)
    return exe


def run(cmd: list[str], log: Path, **kw) -> int:
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, **kw).returncode


class Server:
    """One fresh CPU vLLM server, started the way `validate --launch vllm` starts it."""

    def __init__(self, python: str, model: Path, port: int, logs: Path):
        self.python, self.model, self.port, self.logs = python, model, port, logs

    def __enter__(self):
        self.workdir = tempfile.mkdtemp(prefix="dynosim-")
        cfg = RunConfig(engine=MockerArgs(block_size=32, num_gpu_blocks=4096, max_num_seqs=64,
                                          max_num_batched_tokens=2048))
        opts = ValidateOptions(out=self.logs, model=str(self.model), served_model_name=SERVED, base_port=self.port)
        spec = launch_specs(cfg, opts, False, self.workdir)[0]
        self.servers = [start_server(f"vllm-{self.port}", spec, self.logs, engine="vllm", python=self.python)]
        t = time.time()
        asyncio.run(wait_ready(self.servers, SERVED, 600))
        print(f"server {self.servers[0].url} ready in {time.time() - t:.0f} s", flush=True)
        return self.servers[0].url

    def __exit__(self, *exc):
        stop_all(self.servers)
        shutil.rmtree(self.workdir, ignore_errors=True)


HF_REPO = "dynosim/tiny-llama"


def tokenizer_as_hub_snapshot(model: Path, hf_home: Path) -> str:
    """The tiny model's tokenizer laid out as a Hugging Face cache entry, for aiperf; its repo id.

    aiperf 0.13.0 builds prompts in worker processes that force HF offline mode, and offline it loads a
    tokenizer only as a cached hub snapshot (a local directory path fails there). So the files are copied
    into ``hf_home/hub/models--dynosim--tiny-llama/snapshots/<rev>/`` with ``refs/main`` pointing at it,
    and aiperf runs offline with ``HF_HOME=hf_home`` and ``--tokenizer dynosim/tiny-llama``: nothing is
    fetched from anywhere.
    """
    rev = "0" * 40
    repo = hf_home / "hub" / ("models--" + HF_REPO.replace("/", "--"))
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        if f.is_file() and f.suffix in (".json", ".jinja"):
            shutil.copy2(f, snap / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return HF_REPO


def aiperf_env(hf_home: Path) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


def aiperf_figures(art: Path) -> dict:
    doc = json.loads((art / "profile_export_aiperf.json").read_text())
    out = {label: float(doc[key]["avg"]) for label, key, _ in METRICS}
    out["requests"] = float(doc.get("request_count", {}).get("avg", float("nan")))
    out["input tokens mean"] = float(doc.get("input_sequence_length", {}).get("avg", float("nan")))
    out["output tokens mean"] = float(doc.get("output_sequence_length", {}).get("avg", float("nan")))
    return out


def dynosim_figures(vout: Path) -> dict:
    s = json.loads((vout / "measured" / "summary.json").read_text())
    out = {label: float(s[a][b]) for label, _, (a, b) in METRICS}
    n = s["requests"]["completed"]
    out["requests"] = float(n)
    out["input tokens mean"] = s["input_tokens"] / max(1, s["requests"]["total"])
    out["output tokens mean"] = s["output_tokens"] / max(1, n) if isinstance(s.get("output_tokens"), (int, float)) \
        else float("nan")
    return out


def report(figures: dict[str, list[dict]], say) -> list[str]:
    """Print the side-by-side table; return the misses. With several rounds, each client's round-to-round
    spread ((max - min) / mean) is shown, and a miss no larger than the larger spread is said to be inside
    the noise (it is still a miss)."""
    labels = [m[0] for m in METRICS]
    rounds = len(figures["aiperf"])
    head = f"{'':<20}{'aiperf':>12}{'dynosim':>12}{'ratio':>9}"
    if rounds > 1:
        head += f"{'aiperf spread':>15}{'dynosim spread':>16}"
    say(head + "  verdict")
    missed = []
    for label in labels + ["requests", "input tokens mean", "output tokens mean"]:
        ap_v = statistics.fmean(f[label] for f in figures["aiperf"])
        dy_v = statistics.fmean(f[label] for f in figures["dynosim"])
        ratio = dy_v / ap_v if ap_v else float("nan")
        line = f"{label:<20}{ap_v:>12.2f}{dy_v:>12.2f}{ratio:>9.3f}"
        noise = None
        if rounds > 1:
            sp = [(max(v) - min(v)) / statistics.fmean(v) if statistics.fmean(v) else float("nan") for v in
                  ([f[label] for f in figures[t]] for t in ("aiperf", "dynosim"))]
            line += f"{100 * sp[0]:>14.1f}%{100 * sp[1]:>15.1f}%"
            noise = max(sp)
        verdict = ""
        if label in labels:
            ok = abs(ratio - 1) <= TARGET
            verdict = "ok" if ok else "MISSED" + ("" if noise is None else (
                ", inside the noise" if abs(ratio - 1) <= noise else ", outside the noise"))
            if not ok:
                missed.append(f"{label}: dynosim {dy_v:.2f} vs aiperf {ap_v:.2f} ({100 * (ratio - 1):+.1f}%)"
                              + ("" if noise is None else f", round-to-round spread up to {100 * noise:.1f}%"))
        say(line + f"  {verdict}")
    return missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(ROOT.parent / "shared" / "traces" / "conversation_trace.jsonl"))
    ap.add_argument("--skip", type=int, default=3000)
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=1, help="replays per client (alternating)")
    ap.add_argument("--port", type=int, default=18100)
    ap.add_argument("--out", default=str(ROOT / "runs" / "aiperf"))
    a = ap.parse_args()
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()
    py = ensure_vllm_venv()
    model, _ = ensure_tiny_model(py)
    aiperf = ensure_aiperf()
    slice_path = out / "slice.jsonl"
    rc = run([sys.executable, "-m", "dynosim.cli", "trace", "convert", a.trace, str(slice_path), "--token-scale", "16",
              "--skip", str(a.skip), "--limit", str(a.limit), "--max-total-tokens", "1900"], out / "convert.log",
             cwd=ROOT)
    if rc != 0:
        print((out / "convert.log").read_text())
        return 1
    tokenizer = tokenizer_as_hub_snapshot(model, out / "hf_home")
    figures: dict[str, list[dict]] = {"aiperf": [], "dynosim": []}
    for r in range(a.rounds):
        for tool in ("aiperf", "dynosim"):
            tag = f"{tool}{r + 1}"
            with Server(py, model, a.port, out / "logs") as url:
                t = time.time()
                if tool == "aiperf":
                    art = out / tag
                    rc = run([str(aiperf), "profile", "--model", SERVED, "--tokenizer", tokenizer, "--url", url,
                              "--endpoint-type", "completions", "--streaming", "--input-file", str(slice_path),
                              "--custom-dataset-type", "mooncake_trace", "--fixed-schedule",
                              "--prompt-input-tokens-block-size", "32", "--extra-inputs", "ignore_eos:true",
                              "--use-server-token-count", "--random-seed", "0", "--ui-type", "none",
                              "--no-server-metrics", "--no-gpu-telemetry", "--artifact-dir", str(art)],
                             out / f"{tag}.log", cwd=out, env=aiperf_env(out / "hf_home"))
                    if rc != 0 or not (art / "profile_export_aiperf.json").exists():
                        print(f"aiperf failed (exit {rc}); its log:\n" + (out / f"{tag}.log").read_text()[-4000:])
                        return 1
                    figures[tool].append(aiperf_figures(art))
                else:
                    vout = out / tag
                    rc = run([sys.executable, "-m", "dynosim.cli", "validate", "--trace", str(slice_path),
                              "--trace-block-size", "32", "--endpoint", url, "--served-model-name", SERVED,
                              "--router-mode", "round-robin", "--timing", "fixed", "--block-size", "32",
                              "--tolerance", "1e9", "--reuse-tolerance", "1", "--out", str(vout)],
                             out / f"{tag}.log", cwd=ROOT)
                    if rc != 0:
                        print(f"dynosim validate failed (exit {rc}); its log:\n"
                              + (out / f"{tag}.log").read_text()[-4000:])
                        return 1
                    figures[tool].append(dynosim_figures(vout))
                print(f"{tag}: replay took {time.time() - t:.0f} s", flush=True)

    print(f"\n== the same slice ({a.limit} rows from {a.skip}, tokens ÷ 16) measured by both clients; "
          f"means over {a.rounds} round(s); target |dynosim / aiperf - 1| <= {100 * TARGET:.0f}% ==")
    missed = report(figures, print)
    (out / "measure_vs_aiperf.json").write_text(json.dumps({"target": TARGET, "figures": figures}, indent=2) + "\n")
    print(f"\nwithin {100 * TARGET:.0f}% on every mean: {'YES' if not missed else 'NO'}; total wall "
          f"{time.time() - t0:.0f} s; wrote {out / 'measure_vs_aiperf.json'}")
    for m in missed:
        print(f"  missed: {m}")
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
