"""A local CPU vLLM for validation runs, tests and benchmarks: its venv and a tiny model.

``ensure_vllm_venv`` runs ``scripts/setup_vllm_cpu.sh`` (idempotent: a ready
venv is left as it is); ``ensure_tiny_model`` builds the random-weight Llama
(``engines/live/tiny_llama.py``) once into a cache folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = ROOT / "scripts" / "setup_vllm_cpu.sh"
TINY_BUILDER = ROOT / "dynosim" / "engines" / "live" / "tiny_llama.py"


class LocalVllmError(RuntimeError):
    """The CPU build of vLLM or the tiny model could not be prepared."""


def ensure_vllm_venv(venv: Path = ROOT / ".venv-vllm", *, nixl: bool = False, timeout_s: float = 1800) -> str:
    """Path of the venv's Python, installing vLLM (and NIXL) there first when missing."""
    env = {"NIXL": "1" if nixl else "0"}
    import os

    r = subprocess.run(["bash", str(SETUP_SCRIPT), str(venv)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout_s, env={**os.environ, **env})
    if r.returncode != 0:
        raise LocalVllmError(f"{SETUP_SCRIPT} failed (exit {r.returncode}): {r.stdout[-800:]} {r.stderr[-2000:]}")
    return str(venv / "bin" / "python")


def ensure_tiny_model(python: str, out: Path = ROOT / ".cache" / "tiny-llama") -> tuple[Path, dict]:
    """The tiny model's folder and its description (built with ``python`` when missing)."""
    info = out / "dynosim_tiny_model.json"
    if not info.exists():
        r = subprocess.run([python, str(TINY_BUILDER), str(out)], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise LocalVllmError(f"building the tiny model failed: {r.stderr[-2000:]}")
    return out, json.loads(info.read_text())
