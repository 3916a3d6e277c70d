"""A local CPU vLLM for validation runs, tests and benchmarks: its venv and a tiny model.

``ensure_vllm_venv`` runs ``scripts/setup_vllm_cpu.sh`` (idempotent: a ready
venv is left as it is); ``ensure_tiny_model`` builds the random-weight Llama
(``engines/live/tiny_llama.py``) once into a cache folder.

Big tool environments live outside the checkout, in the cache directory
``${DYNOSIM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/dynosim}`` (``cache_dir()``):
the vLLM venv (about 3.9 GB) is ``<cache>/venv-vllm`` unless
``DYNOSIM_VLLM_VENV`` names another (``vllm_venv_dir()``). An old
``.venv-vllm`` inside the repository is not used any more.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = ROOT / "scripts" / "setup_vllm_cpu.sh"
TINY_BUILDER = ROOT / "dynosim" / "engines" / "live" / "tiny_llama.py"


class LocalVllmError(RuntimeError):
    """The CPU build of vLLM or the tiny model could not be prepared."""


def cache_dir() -> Path:
    """``$DYNOSIM_CACHE``, else ``$XDG_CACHE_HOME/dynosim``, else ``~/.cache/dynosim`` (not created here)."""
    if os.environ.get("DYNOSIM_CACHE"):
        return Path(os.environ["DYNOSIM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dynosim"


def vllm_venv_dir() -> Path:
    """Where the CPU vLLM venv lives: ``$DYNOSIM_VLLM_VENV``, else ``cache_dir() / "venv-vllm"``."""
    if os.environ.get("DYNOSIM_VLLM_VENV"):
        return Path(os.environ["DYNOSIM_VLLM_VENV"]).expanduser()
    return cache_dir() / "venv-vllm"


def ensure_vllm_venv(venv: Path | None = None, *, nixl: bool = False, timeout_s: float = 1800) -> str:
    """Path of the venv's Python (default ``vllm_venv_dir()``), installing vLLM (and NIXL) there first when
    missing."""
    venv = Path(venv) if venv is not None else vllm_venv_dir()
    env = {"NIXL": "1" if nixl else "0"}
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
