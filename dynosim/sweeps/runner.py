"""Run sweep points: serially, on a local process pool, or on a Ray cluster; results stream into the store.

A point that raises stops the sweep with a ``PointError`` naming the point, after the points already running
have finished and been recorded (nothing finished is lost; a rerun resumes). Pool workers die with the sweep
however it dies: SIGTERM (or Ctrl-C) of the parent stops them at once, and a parent killed outright takes them
along (``PR_SET_PDEATHSIG`` on Linux, and a thread watching the parent's pid everywhere), so a killed sweep
never leaves simulations running for minutes under PID 1.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from functools import lru_cache
from typing import Any, Callable, Iterable

from dynosim.metrics.catalog import SWEEP_ROW, flat_row
from dynosim.sweeps.spec import SweepPoint

EXECUTORS = ("local", "serial", "ray")
PARENT_POLL_S = 0.5   # the portable watchdog's period: an orphaned worker exits within this (plus a point's tick)


class PointError(RuntimeError):
    """A point raised: which point, and what it raised (the sweep's finished points are in the store)."""

    def __init__(self, point: SweepPoint, cause: BaseException):
        self.point, self.cause = point, cause
        super().__init__(f"point {point_text(point)}: {cause_text(cause)}")


class SweepStopped(BaseException):
    """The sweep was asked to stop (SIGTERM); the pool is shut down, finished points are in the store.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` on the way may swallow it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def point_text(point: SweepPoint) -> str:
    """A point as a person names it: deployment, load, and the seed when it is not the first."""
    from dynosim.sweeps.recommend import load_text

    lb = point.labels
    seed = f" seed {lb['seed']}" if lb.get("seed") else ""
    return f"{lb.get('config', point.id)} {load_text(float(lb.get('load', 1.0)), str(lb.get('load_kind')))}{seed}"


def cause_text(exc: BaseException) -> str:
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, BrokenProcessPool):
        return "its worker process died (killed by the system, e.g. out of memory?)"
    return f"{type(exc).__name__}: {exc}"


@lru_cache(maxsize=4)
def _trace(path: str, trace_block_size: int, speedup: float, limit: int | None, sha256: str | None = None):
    from dynosim.traces.mooncake import load_trace

    if sha256 is not None:
        from dynosim.sweeps.store import sha256_file

        if sha256_file(path) != sha256:
            raise ValueError(f"trace {path} changed while the sweep ran (its digest is not {sha256[:12]})")
    return load_trace(path, trace_block_size=trace_block_size, speedup=speedup, limit=limit)


METRIC_NAMES = SWEEP_ROW      # a row's measurements (the metric catalogue's sweep columns)


def metrics_row(summary: dict) -> dict[str, Any]:
    """The figures a sweep compares, flat (one column each)."""
    return flat_row(summary)


def run_point(point: SweepPoint, trace_path: str, limit: int | None = None,
              trace_sha256: str | None = None) -> dict[str, Any]:
    """Simulate one point; a row of labels and metrics (``wall_s`` is the only non-deterministic field).

    With ``trace_sha256`` the trace must still have that digest (the store recorded it as the input)."""
    from dynosim.sim.simulation import simulate, summarize_state

    t0 = time.perf_counter()
    cfg = point.config
    trace = _trace(trace_path, cfg.trace_block_size, cfg.arrival_speedup, limit, trace_sha256)
    if point.resample_fraction is not None:
        trace = trace.resample(point.resample_fraction, cfg.seed)
    _, summary = summarize_state(simulate(trace, cfg))
    return {"id": point.id, **point.labels, **metrics_row(summary), "wall_s": time.perf_counter() - t0}


def _ray_run_point(point, trace_path, limit, trace_sha256=None):  # pragma: no cover - executed inside Ray workers
    return run_point(point, trace_path, limit, trace_sha256)


def _worker_init(parent: int | None) -> None:
    """Tie a pool worker's life to the sweep's: it dies when its parent dies, however the parent dies."""
    from dynosim.sweeps.store import HELD_LOCK_FDS

    for fd in list(HELD_LOCK_FDS):      # a forked copy of the folder's lock: the parent alone holds it
        try:
            os.close(fd)
        except OSError:
            pass
    HELD_LOCK_FDS.clear()
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C reaches the whole group: the parent stops the pool
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    ppid = os.getppid()
    if parent is not None and ppid != parent:     # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != ppid:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="dynosim-parent-watch", daemon=True).start()


def _raise_stopped(signum, frame) -> None:
    raise SweepStopped(signum)


def execute(points: Iterable[SweepPoint], trace_path: str, *, executor: str = "local", jobs: int | None = None,
            limit: int | None = None, ray_address: str | None = None, trace_sha256: str | None = None,
            on_result: Callable[[dict[str, Any]], None] = lambda r: None) -> None:
    """Run ``points``, calling ``on_result`` in the parent as each finishes (any order).

    Raises ``PointError`` for the first point that raised (after the running ones finished and were passed to
    ``on_result``), ``SweepStopped`` on SIGTERM (from the main thread)."""
    points = list(points)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {list(EXECUTORS)}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if not points:
        return
    if executor == "ray":
        _execute_ray(points, trace_path, limit, ray_address, jobs, trace_sha256, on_result)
        return
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_stopped) if main else None
    try:
        if executor == "serial" or (jobs or os.cpu_count() or 1) == 1:
            for p in points:
                try:
                    row = run_point(p, trace_path, limit, trace_sha256)
                except Exception as exc:  # noqa: BLE001 - any failure of a point is reported with the point
                    raise PointError(p, exc) from exc
                on_result(row)
            return
        _execute_pool(points, trace_path, limit, min(jobs or os.cpu_count() or 1, len(points)), trace_sha256,
                      on_result)
    finally:
        if main:
            signal.signal(signal.SIGTERM, old)


def _execute_pool(points: list[SweepPoint], trace_path: str, limit: int | None, n: int, trace_sha256: str | None,
                  on_result: Callable[[dict[str, Any]], None]) -> None:
    ctx = multiprocessing.get_context()
    parent = os.getpid() if ctx.get_start_method() != "forkserver" else None
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init, initargs=(parent,))
    failures: list[tuple[int, SweepPoint, BaseException]] = []
    order = {p.id: i for i, p in enumerate(points)}
    try:
        running: dict[Future, SweepPoint] = {}
        queue = list(points)
        while queue and len(running) < 2 * n:
            p = queue.pop(0)
            running[pool.submit(run_point, p, trace_path, limit, trace_sha256)] = p
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                p = running.pop(fut)
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if not failures:          # stop: the queue is dropped, waiting points cancelled
                        queue.clear()
                        for other in running:
                            other.cancel()
                    failures.append((order[p.id], p, exc))
                    continue
                on_result(fut.result())
                if queue:
                    q = queue.pop(0)
                    running[pool.submit(run_point, q, trace_path, limit, trace_sha256)] = q
    except BaseException:
        _kill_pool(pool)
        raise
    pool.shutdown(wait=True)
    if failures:
        _, p, exc = min(failures, key=lambda f: f[0])
        raise PointError(p, exc) from exc


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: drop what waits, kill the workers (a point in flight is redone on resume)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        try:
            proc.kill()
        except (OSError, ValueError):
            pass
    for proc in procs:
        try:
            proc.join(5)
        except (OSError, ValueError, AssertionError):
            pass


def _execute_ray(points, trace_path, limit, address, jobs, trace_sha256, on_result) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=jobs if address is None else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(_ray_run_point)
        refs = {remote.remote(p, trace_path, limit, trace_sha256): p for p in points}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                try:
                    row = ray.get(r)
                except Exception as exc:  # noqa: BLE001 - ray wraps the point's exception
                    for other in pending:
                        ray.cancel(other)
                    raise PointError(refs[r], getattr(exc, "cause", None) or exc) from exc
                on_result(row)
    finally:
        if started:
            ray.shutdown()
