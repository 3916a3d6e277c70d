"""``dynosim validate``: launch or attach live engines, replay, simulate the same, compare.

``validate(trace, cfg, opts)`` is the whole job as a library call; the CLI
only parses flags into ``ValidateOptions``. Outputs in ``opts.out``:
``comparison.csv``/``.json`` (measured, predicted, error per metric),
``comparison.png``, ``measured/`` and ``predicted/`` (summary.json,
requests.parquet/csv), ``logs/`` (one per launched server).

Attached endpoints are checked before anything is sent (one ``GET
/v1/models`` each, connect timeout ``connect_timeout_s``): an unreachable one
is a ``ServerError`` naming it at once. While the replay runs, a line of
progress comes every ``progress_every_s`` seconds in which nothing else was
said (requests finished, in flight, not sent yet, the oldest in flight), so a
stalled engine is never silence. Ctrl-C (SIGINT) during the replay stops
sending, cancels the requests in flight and still writes what was measured:
the summary says ``aborted: interrupted ...`` and the exit code is 3; a second
Ctrl-C stops at once. ``measured/`` is written before the simulation runs.

``cfg`` describes the deployment once, for both worlds: the servers launched (or the endpoints
attached, one per worker of each pool) are its pools, ``cfg.workers`` aggregated or
``cfg.disagg``'s prefill and decode pools, the live replay builds it with live workers and the
simulator predicts the very same ``cfg``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from dynosim.api import run as simulate
from dynosim.config import RunConfig
from dynosim.engines.live.kv_events import KvEventListenerError
from dynosim.traces.mooncake import Trace
from dynosim.validate.compare import DEFAULT_GATE, compare, plot, verdict
from dynosim.validate.live_deployment import check_attach_counts, launch_specs, pool_roles
from dynosim.validate.live_run import LiveRun, measured_is_complete
from dynosim.validate.replay import LiveReplay
from dynosim.validate.servers import ServerError, ServerProcess, default_engine_python, start_server, stop_all, \
    wait_ready


@dataclass
class ValidateOptions:
    out: Path
    model: str = ""                        # model path/name to launch (also the served name when not given)
    served_model_name: str | None = None
    launch: str | None = None              # "vllm" / "sglang": start servers; None: attach to endpoints
    endpoints: list[str] = field(default_factory=list)
    kv_event_endpoints: list[str] = field(default_factory=list)  # attach mode: where each engine publishes
    device: str = "cpu"
    engine_python: str | None = None
    base_port: int = 18000
    events_base_port: int = 18500
    cpu_cores: int | None = None           # cores to split between CPU instances (default: all)
    gpus_per_worker: int = 1
    max_model_len: int = 2048
    match_kv_capacity: bool = True         # launch with --num-gpu-blocks-override = the simulated capacity
    startup_timeout_s: float = 600.0
    request_timeout_s: float = 600.0
    idle_timeout_s: float | None = 60.0   # longest silence between two chunks of a stream (None: no limit)
    connect_timeout_s: float = 5.0         # attach mode: the endpoint check and every request's TCP connect
    progress_every_s: float = 5.0          # a progress line when nothing was said for this long
    vocab_size: int = 2048
    token_low: int = 4
    token_high: int | None = None
    prompt_seed: int = 0
    tolerance: float = 0.10
    reuse_tolerance: float = 0.02
    tolerances: dict[str, float] = field(default_factory=dict)
    gate: tuple[str, ...] = DEFAULT_GATE
    extra_engine_args: tuple[str, ...] = ()
    decode_endpoints: list[str] = field(default_factory=list)   # attach mode, disaggregated (cfg.disagg)


@dataclass
class ValidationResult:
    table: pd.DataFrame
    measured: dict
    predicted: dict
    passed: bool
    complete: bool
    out: Path
    live: LiveRun

    @property
    def exit_code(self) -> int:
        """0 pass; 1 a gated metric is out of tolerance; 3 the live run lost requests or was aborted."""
        if not self.complete:
            return 3
        return 0 if self.passed else 1


def _kv_factories(endpoints: list[str], block_size: int) -> list[Callable]:
    from dynosim.engines.live.kv_events import KvEventListener

    return [lambda w, on_event, ep=ep: KvEventListener(ep, w, block_size, on_event) for ep in endpoints]


async def _live(trace: Trace, cfg: RunConfig, opts: ValidateOptions, say: Callable[[str], None]) -> LiveRun:
    wants_events = _router_wants_events(cfg)
    servers: list[ServerProcess] = []
    workdir = tempfile.mkdtemp(prefix="dynosim-")
    try:
        if opts.launch:
            specs = launch_specs(cfg, opts, wants_events, workdir)
            python = opts.engine_python or default_engine_python(opts.launch)
            for (pool, i), spec in zip(pool_roles(cfg), specs):
                name = f"{'worker' if pool == 'workers' else pool}{i}"
                servers.append(start_server(name, spec, opts.out / "logs", engine=opts.launch, python=python))
            say(f"started {len(servers)} {opts.launch} server(s); waiting for them to become healthy "
                f"(timeout {opts.startup_timeout_s:.0f} s) …")
            await wait_ready(servers, specs[0].served_model_name, opts.startup_timeout_s)
            say("servers ready: " + ", ".join(f"{sp.url} in {sp.ready_s:.0f} s" for sp in servers))
            routed = [spec.role != "decode" for spec in specs]   # the router's pool: aggregated or prefill
            urls = [sp.url for sp, r in zip(servers, routed) if r]
            decode_urls = [sp.url for sp, r in zip(servers, routed) if not r]
            events = [s.kv_events_endpoint for s, r in zip(specs, routed) if r] if wants_events else []
        else:
            urls = [u.rstrip("/") for u in opts.endpoints]
            decode_urls = [u.rstrip("/") for u in opts.decode_endpoints]
            events = list(opts.kv_event_endpoints)
            if wants_events and len(events) != len(urls):
                raise ValueError(f"router mode {cfg.router_mode!r} indexes KV events: give --kv-events once per "
                                 f"--endpoint ({len(urls)}), where each engine publishes, or --no-router-kv-events")
        model = opts.served_model_name or opts.model
        if not opts.launch:
            model = await check_endpoints(urls, decode_urls, model, opts, say)
        progress = _Progress(say, trace.n_requests, opts.progress_every_s)
        replay = LiveReplay(trace, cfg, urls, model, vocab_size=opts.vocab_size, token_low=opts.token_low,
                            token_high=opts.token_high, prompt_seed=opts.prompt_seed,
                            request_timeout_s=opts.request_timeout_s, idle_timeout_s=opts.idle_timeout_s,
                            connect_timeout_s=opts.connect_timeout_s,
                            kv_listeners=_kv_factories(events, cfg.engine.block_size) if wants_events else None,
                            servers=servers, progress=progress.finished, heartbeat=progress.heartbeat,
                            heartbeat_every_s=min(1.0, opts.progress_every_s), decode_urls=decode_urls)
        pools = f"{len(urls)} live worker(s)" if not decode_urls else \
            f"{len(urls)} prefill + {len(decode_urls)} decode live worker(s)"
        say(f"replaying {trace.n_requests} requests on {pools}, router {cfg.router_mode} "
            f"(idle timeout {_secs(opts.idle_timeout_s)}; Ctrl-C stops and keeps what was measured) …")
        try:
            with _sigint_aborts(replay, say):
                return await replay.run()
        except KvEventListenerError as exc:
            if opts.launch:
                raise ServerError(str(exc)) from None
            raise ValueError(f"--kv-events: {exc}") from None
    finally:
        stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)


def _secs(x: float | None) -> str:
    return "none" if x is None else f"{x:g} s"


async def check_endpoints(urls: list[str], decode_urls: list[str], model: str, opts: ValidateOptions,
                          say: Callable[[str], None]) -> str:
    """Attach mode, before anything is sent: every endpoint answers ``GET /v1/models``; the model to ask for.

    An endpoint that cannot be reached is a ``ServerError`` naming it (fast:
    ``opts.connect_timeout_s``); a served model the endpoint does not list, or
    no ``--served-model-name`` for an endpoint serving several, a ``ValueError``.
    """
    from dynosim.engines.live.health import EndpointError, served_models

    answer_s = opts.idle_timeout_s or 30.0
    named = [("--endpoint", u) for u in urls] + [("--decode-endpoint", u) for u in decode_urls]
    for k, (flag, url) in enumerate(named):
        if k == 0:
            say(f"asking {url} for its model …" if not model else
                f"checking {len(named)} endpoint(s) (GET /v1/models) …")
        try:
            ids = await served_models(url, connect_timeout_s=opts.connect_timeout_s, timeout_s=answer_s)
        except EndpointError as exc:
            raise ServerError(f"{flag} {url}: {exc}") from None
        if not model:
            if not ids:
                raise ValueError(f"{flag} {url} does not list the models it serves (GET {url}/v1/models): "
                                 "say which with --served-model-name")
            if len(ids) != 1:
                raise ValueError(f"{flag} {url} serves {ids}: say which with --served-model-name")
            model = ids[0]
            say(f"{url} serves {model}")
        elif ids is not None and model not in ids:
            raise ValueError(f"{flag} {url} serves {ids}, not {model!r} (--served-model-name)")
    return model


class _sigint_aborts:
    """While active (main thread only): the first SIGINT aborts ``replay`` (it ends and reports what it has),
    a second one raises ``KeyboardInterrupt`` as usual."""

    def __init__(self, replay: LiveReplay, say: Callable[[str], None]):
        self.replay = replay
        self.say = say
        self.prev = None
        self.hits = 0

    def _handler(self, signum, frame) -> None:
        self.hits += 1
        if self.hits > 1:
            raise KeyboardInterrupt
        self.loop.call_soon_threadsafe(self._abort)

    def _abort(self) -> None:
        self.say("interrupted (SIGINT): no more requests are sent, the ones in flight are cancelled; "
                 "writing what was measured (Ctrl-C again to stop at once) …")
        self.replay.abort("interrupted by the user (SIGINT)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.loop = asyncio.get_running_loop()
            self.prev = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)



def _router_wants_events(cfg: RunConfig) -> bool:
    from dynosim.router.policies import make_policy

    return bool(make_policy(cfg.router_mode, seed=0).uses_overlap) and cfg.router.kv_events


class _Progress:
    """Replay progress: a line at every tenth of the requests, and one whenever ``every_s`` passed in silence."""

    def __init__(self, say: Callable[[str], None], total: int, every_s: float):
        self._say = say
        self.total = total
        self.step = max(1, total // 10)
        self.every_s = every_s
        self.last_said = time.monotonic()

    def say(self, msg: str) -> None:
        self.last_said = time.monotonic()
        self._say(msg)

    def finished(self, done: int, _total: int, failed: int) -> None:
        if done % self.step == 0 or done == self.total:
            self.say(f"  {done}/{self.total} requests finished ({failed} failed)")

    def heartbeat(self, st: dict) -> None:
        if time.monotonic() - self.last_said < self.every_s:
            return
        oldest = f"; the oldest in flight for {st['oldest_inflight_s']:.0f} s" if st["inflight"] else ""
        self.say(f"  {st['elapsed_s']:.0f} s: {st['done']}/{self.total} requests finished ({st['failed']} failed), "
                 f"{st['inflight']} in flight, {st['not_sent']} not sent yet{oldest}")


def validate(trace: Trace, cfg: RunConfig, opts: ValidateOptions,
             say: Callable[[str], None] = lambda s: None) -> ValidationResult:
    """Replay ``trace`` live, simulate it with ``cfg``, compare; writes everything into ``opts.out``."""
    if not opts.launch and not opts.endpoints:
        raise ValueError("give --launch vllm (start servers) or --endpoint URL (attach), once per worker")
    if opts.launch and not opts.model:
        raise ValueError("--launch needs --model (a local model directory or name the engine can load)")
    if not opts.launch:
        check_attach_counts(cfg, opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    # one description of the deployment for both worlds: the live replay builds it (deploy.build_deployment,
    # live workers) and the simulator predicts it
    live = asyncio.run(_live(trace, cfg, opts, say))
    measured = live.summary()
    mdf = live.frame()
    _write_side(opts.out / "measured", mdf, measured)   # kept even if the simulation is interrupted
    say(f"live run: {measured['requests']['completed']} completed, {measured['requests']['failed']} failed, "
        f"{measured['requests']['not_sent']} not sent, {live.wall_s:.1f} s"
        + (f"; ABORTED: {live.aborted.splitlines()[0]}" if live.aborted else ""))
    if cfg.disagg is not None:
        d = cfg.disagg
        engines = cfg.pool_engines()
        h = d.transfer.resolve(engines["prefill"].hardware, engines["decode"].hardware, cfg.num_gpus)
        link = h.link
        say(f"simulating the same trace on {d.prefill_workers} prefill + {d.decode_workers} decode worker(s), "
            f"KV hand-off {h.bytes_per_token:g} B/token at {link.bandwidth_gbps:g} GB/s "
            f"+ {link.latency_ms:g} ms …")
    else:
        say("simulating the same trace and deployment …")
    prediction = simulate(trace, config=cfg, timeline_points=0)
    pdf, predicted = prediction.requests, prediction.summary
    table = compare(measured, predicted, tolerance=opts.tolerance, reuse_tolerance=opts.reuse_tolerance,
                    tolerances=opts.tolerances, gate=opts.gate)
    passed = verdict(table)
    result = ValidationResult(table, measured, predicted, passed, measured_is_complete(measured), opts.out, live)
    _write(result, mdf, pdf, cfg)
    return result


def _write_side(d: Path, df: pd.DataFrame, summary: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    df.to_parquet(d / "requests.parquet", index=False)
    df.to_csv(d / "requests.csv", index=False)


def _write(res: ValidationResult, mdf: pd.DataFrame, pdf: pd.DataFrame, cfg: RunConfig) -> None:
    out = res.out
    _write_side(out / "predicted", pdf, res.predicted)
    res.table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.json").write_text(json.dumps({
        "passed": res.passed, "complete": res.complete, "exit_code": res.exit_code,
        "aborted": res.measured.get("aborted"), "config": json.loads(cfg.model_dump_json()),
        "metrics": json.loads(res.table.to_json(orient="records")),
    }, indent=2) + "\n")
    try:
        d = cfg.disagg
        pools = f"{cfg.workers} worker(s)" if d is None else f"{d.prefill_workers}P+{d.decode_workers}D"
        plot(res.table, mdf, pdf, out / "comparison.png", title=f"{pools}, {cfg.router_mode}")
    except Exception as exc:  # a plot must never cost the numbers
        (out / "comparison.png.error.txt").write_text(f"{type(exc).__name__}: {exc}\n")


__all__ = ["ValidateOptions", "ValidationResult", "validate", "launch_specs", "live_disagg", "check_attach_counts",
           "ServerError"]
