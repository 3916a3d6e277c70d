"""Big tool environments live outside the checkout (issue 12, live item 4).

The CPU vLLM venv is about 3.9 GB; CI used to write it into the repository
folder (``.venv-vllm``). Its place is the cache directory
``${DYNOSIM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/dynosim}/venv-vllm`` unless
``DYNOSIM_VLLM_VENV`` names another, the same for the install script, the
launcher's default engine Python, the live tests and the benchmarks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dynosim.validate import local_vllm, servers

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup_vllm_cpu.sh"


def _script_where(env: dict[str, str]) -> Path:
    r = subprocess.run(["bash", str(SETUP), "--where"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip())


@pytest.mark.parametrize("setting,expect", [
    ({}, "{home}/.cache/dynosim/venv-vllm"),
    ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "{tmp}/xdg/dynosim/venv-vllm"),
    ({"XDG_CACHE_HOME": "{tmp}/xdg", "DYNOSIM_CACHE": "{tmp}/dc"}, "{tmp}/dc/venv-vllm"),
    ({"DYNOSIM_CACHE": "{tmp}/dc", "DYNOSIM_VLLM_VENV": "{tmp}/mine"}, "{tmp}/mine"),
])
def test_the_vllm_venv_is_in_the_cache_directory_for_python_and_the_install_script(tmp_path, monkeypatch,
                                                                                   setting, expect):
    home = tmp_path / "home"
    fill = {"home": str(home), "tmp": str(tmp_path)}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    for k in ("DYNOSIM_CACHE", "XDG_CACHE_HOME", "DYNOSIM_VLLM_VENV"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(home))
    for k, v in setting.items():
        env[k] = v.format(**fill)
        monkeypatch.setenv(k, env[k])
    want = Path(expect.format(**fill))
    assert local_vllm.vllm_venv_dir() == want
    assert _script_where(env) == want
    assert not str(want).startswith(str(ROOT))


def test_the_default_engine_python_ignores_a_venv_in_the_checkout(tmp_path, monkeypatch):
    """An old ``.venv-vllm`` in the working directory is not picked up; the cache's venv is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".venv-vllm" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-vllm" / "bin" / "python").write_text("")
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DYNOSIM_VLLM_VENV", raising=False)
    import sys

    assert servers.default_engine_python("vllm") == sys.executable      # nothing in the cache yet
    py = tmp_path / "cache" / "venv-vllm" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("")
    assert servers.default_engine_python("vllm") == str(py)


def test_ensure_vllm_venv_installs_into_the_cache_by_default(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("DYNOSIM_VLLM_VENV", raising=False)
    monkeypatch.setattr(local_vllm.subprocess, "run", fake_run)
    assert local_vllm.ensure_vllm_venv() == str(tmp_path / "c" / "venv-vllm" / "bin" / "python")
    assert calls == [["bash", str(SETUP), str(tmp_path / "c" / "venv-vllm")]]


def test_nothing_names_the_old_in_tree_venv():
    """The README, CI and the code that install or use the venv all point at the cache."""
    for rel in ("README.md", ".ci/run", "scripts/setup_vllm_cpu.sh", "dynosim/validate/servers.py",
                "dynosim/validate/local_vllm.py", "tests/test_live_vllm.py", "benchmarks/fidelity_cpu.py",
                "dynosim/cli/common.py", "dynosim/engines/live/tiny_llama.py"):
        text = (ROOT / rel).read_text()
        lines = [ln for ln in text.splitlines() if ".venv-vllm" in ln and "not used any more" not in ln and "an old" not in ln]
        assert not lines, f"{rel}: {lines}"
