"""``dynosim.validate`` against in-process fake vLLM servers: live replay, faults, dead servers, compare, CLI.

The live side (``LiveReplay``) replays small traces on the wall clock through
dynosim's own Router into ``tests/live/fake_server.py`` servers with scripted
latencies and a real prefix cache; the simulated side replays the same trace
with a fixed-timing engine whose latencies equal the script. Traces are a few
dozen requests tens of ms apart, so each replay takes well under a second.

Timing checks are loose on purpose (a shared 2-core box); what must hold
exactly is what does not depend on timing: token counts, routing decisions,
prefix-cache hits, the accounting of failed and unsent requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import load_rows, write_trace
from dynosim.cli import app
from dynosim.config import RouterParams, RunConfig
from dynosim.engines.live.prompts import prompt_token_ids, shared_prefix_tokens
from dynosim.engines.mocker.config import MockerArgs
from dynosim.sim.simulation import simulate, summarize_state
from dynosim.validate import workflow
from dynosim.validate.compare import DEFAULT_GATE, METRIC_KEYS, compare, format_error, plot, verdict
from dynosim.validate.live_run import LiveRun, measured_is_complete
from dynosim.validate.replay import LiveReplay
from dynosim.validate.workflow import ValidateOptions, validate
from live.fake_server import FakeOpenAIServer, Script, fleet_of

MODEL = "fake-model"
TBS = 64               # tokens per trace hash id
BS = 32                # KV block of the fakes and of the simulated engine
TTFT, ITL = 10.0, 5.0  # the fakes' script (ms) = the fixed timing model's prefill_ms / decode_ms (its defaults)
VOCAB = 2048           # LiveReplay's default prompt vocabulary = the fake's


def fixed_engine() -> MockerArgs:
    return MockerArgs(timing="fixed", timing_params={"prefill_ms": TTFT, "decode_ms": ITL}, block_size=BS)


def config(mode: str, workers: int = 2, **router) -> RunConfig:
    return RunConfig(workers=workers, router_mode=mode, trace_block_size=TBS, seed=3,
                     router=RouterParams(kv_events=False, **router), engine=fixed_engine())


def script(**kw) -> Script:
    return Script(**{"ttft_ms": TTFT, "itl_ms": ITL, "block_size": BS, **kw})


async def _replay(trace, cfg, n: int, setup=None, **kw) -> tuple[LiveRun, list[FakeOpenAIServer]]:
    servers = [await FakeOpenAIServer(script=script()).start() for _ in range(n)]
    try:
        if setup is not None:
            setup(servers)
        run = await LiveReplay(trace, cfg, [s.base_url for s in servers], MODEL, **kw).run()
    finally:
        for s in servers:
            await s.stop()
    return run, servers


def replay(trace, cfg, n: int = 2, setup=None, **kw) -> tuple[LiveRun, list[FakeOpenAIServer]]:
    """Start ``n`` fakes, replay ``trace`` through them with ``cfg``; ``setup(servers)`` runs first, on the loop."""
    kw.setdefault("health_every_s", 0.2)
    return asyncio.run(_replay(trace, cfg, n, setup, **kw))


def by_line(requests) -> list:
    return sorted(requests, key=lambda r: r.line)


def assert_accounted(run: LiveRun, n_rows: int) -> dict:
    """Nothing lost: every trace row is completed, failed or counted as not sent."""
    s = run.summary()
    r = s["requests"]
    assert r["total"] == n_rows
    assert r["completed"] + r["failed"] + r["not_sent"] == n_rows
    assert r["unfinished"] == 0
    assert r["not_sent"] == n_rows - len(run.requests)
    return s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# traces


def prefix(g: int) -> list[int]:
    """Shared "system prompt" of group g: 3 trace blocks = 192 tokens = 6 KV blocks."""
    return [1000 * (g + 1) + j for j in range(3)]


def sharing_rows() -> list[dict]:
    """Three prefix groups and two growing-context sessions, spaced so the cluster is idle at each arrival.

    Arrivals 60 ms apart for requests that take ~20-30 ms; the sessions' turns
    (30 ms after the previous turn completes) run alone, so the order in which
    requests reach the router (hence round-robin's choices and the engines'
    cache contents) does not depend on timing.
    """
    rows = []
    for i in range(9):
        rows.append({"timestamp": 60 * i, "input_length": 4 * TBS, "output_length": 3 + i % 3,
                     "hash_ids": prefix(i % 3) + [50_000 + i]})
    for sid, g, t0 in (("sA", 0, 600), ("sB", 1, 900)):
        ids = prefix(g) + [60_000 + 100 * g]
        for k in range(3):
            row = {"input_length": TBS * len(ids) - 7, "output_length": 4, "hash_ids": list(ids),
                   "session_id": sid}
            row.update({"timestamp": t0} if k == 0 else {"delay": 30})
            rows.append(row)
            ids = ids + [60_001 + 100 * g + k]
    return rows


def expected_cached(requests) -> dict[int, int]:
    """Cached prompt tokens per request from the fake's semantics, independently of dynosim.

    Per worker, in arrival order: the longest full-block prefix shared with a
    prompt sent earlier to that worker (unbounded cache), never the whole prompt.
    """
    out = {}
    sent: dict[int, list[list[int]]] = {}
    for r in sorted(requests, key=lambda r: r.arrival):
        p = prompt_token_ids(r.hash_ids, r.isl, trace_block_size=TBS, vocab_size=VOCAB)
        common = max((shared_prefix_tokens(p, q) for q in sent.get(r.worker, [])), default=0)
        out[r.rid] = min(common // BS, (r.isl - 1) // BS) * BS
        sent.setdefault(r.worker, []).append(p)
    return out


# ---------------------------------------------------------------------------
# 1. replay: exact counts, scripted latencies, session chaining, prefix cache hits


@pytest.mark.parametrize("mode", ["round-robin", "kv"])
def test_replay_counts_latencies_sessions_and_prefix_hits(tmp_path, mode):
    rows = sharing_rows()
    trace = load_rows(tmp_path, rows, tbs=TBS)
    # kv: approximate indexer (the fake publishes no KV events); a heavy prefill weight makes the
    # cache-overlap term dominate any in-flight load, so a noisy box cannot split a prefix group
    cfg = config(mode, prefill_load_scale=100.0)
    run, servers = replay(trace, cfg)
    s = assert_accounted(run, len(rows))
    n = len(rows)
    assert s["requests"] == {"total": n, "completed": n, "failed": 0, "unfinished": 0, "not_sent": 0}
    assert s["aborted"] is None and measured_is_complete(s)
    reqs = by_line(run.requests)

    # exact token counts, as the engine reported them
    assert all(r.status == "done" for r in reqs)
    assert [r.generated for r in reqs] == [row["output_length"] for row in rows]
    for r in reqs:
        res = run.results[r.rid]
        assert res.ok and res.completion_tokens == r.osl and res.prompt_tokens == r.isl
    sent = {x["request_id"]: x["body"] for srv in servers for x in srv.requests}
    assert len(sent) == n
    for r in reqs:
        body = sent[f"dynosim-{r.rid}"]
        assert body["max_tokens"] == r.osl and len(body["prompt"]) == r.isl
        assert body["prompt"] == prompt_token_ids(r.hash_ids, r.isl, trace_block_size=TBS, vocab_size=VOCAB)
    assert {srv.base_url for srv in servers} == set(run.urls)

    # latencies: the scripted ones plus client/loop overhead (loose)
    assert TTFT <= s["ttft_ms"]["p50"] <= TTFT + 150
    assert 0.2 * ITL <= s["itl_ms"]["mean"] <= ITL + 30
    assert all(r.arrival <= r.first_token <= r.last_token for r in reqs)
    assert len(run.token_gaps()) == sum(r.osl - 1 for r in reqs)

    # session turns chain: the next turn arrives its delay after the previous turn's last token
    for sid in ("sA", "sB"):
        turns = sorted((r for r in reqs if r.session == sid), key=lambda r: r.turn)
        assert [t.turn for t in turns] == [0, 1, 2]
        for a, b in zip(turns, turns[1:]):
            # scheduled its delay after the previous turn's last token; sent then (arrival = send time)
            assert run.scheduled[b.rid] == pytest.approx(a.last_token + 30, abs=1e-6)
            assert 0 <= b.arrival - run.scheduled[b.rid] < 50
            assert b.arrival > a.last_token > a.arrival

    # prefix cache: per-request hits follow the shared prefixes on the worker each request went to
    exp = expected_cached(reqs)
    assert {r.rid: r.reused for r in reqs} == exp
    assert all(run.results[r.rid].cached_tokens == r.reused for r in reqs)
    reused = sum(r.reused for r in reqs)
    assert reused > 0
    assert s["prefix_reuse_source"] == "per-request usage"
    assert s["prefix_reuse_ratio"] == pytest.approx(reused / sum(r.isl for r in reqs))
    assert s["engine_counters"]["prefix_cache_hits"] == reused
    assert s["engine_counters"]["prefix_cache_queries"] == sum(r.isl for r in reqs)

    # ... and equal the simulator's prediction for the same trace and deployment
    state = simulate(trace, cfg)
    sim = by_line(state.requests)
    _, predicted = summarize_state(state)
    assert [r.reused for r in reqs] == [r.reused for r in sim]
    assert s["prefix_reuse_ratio"] == pytest.approx(predicted["prefix_reuse_ratio"])

    if mode == "kv":
        # requests sharing a prefix (groups, and each session's turns) land on one worker
        for g in range(3):
            assert len({r.worker for r in reqs if list(r.hash_ids[:3]) == prefix(g)}) == 1
        # every request after a group's first hits the group prefix (6 blocks) or more
        firsts = {min((r for r in reqs if list(r.hash_ids[:3]) == prefix(g)), key=lambda r: r.arrival).rid
                  for g in range(3)}
        assert all(r.reused >= 6 * BS for r in reqs if r.rid not in firsts)
        assert [r.turn for r in reqs if r.session == "sA" and r.router_overlap > 0] == [0, 1, 2]
    else:
        # round-robin: the simulator made the same choices
        assert [r.worker for r in reqs] == [r.worker for r in sim]
        assert [r.worker for r in sorted(reqs, key=lambda r: r.rid)] == [i % 2 for i in range(n)]


# ---------------------------------------------------------------------------
# 2. the same router decisions as the simulator, under concurrency


def test_round_robin_assignment_equals_simulator_under_concurrency(tmp_path):
    rows = []
    for i in range(20):  # overlapping requests: 15 ms apart, 25-50 ms long
        row = {"timestamp": 15 * i, "input_length": 2 * TBS, "output_length": 4 + i % 5,
               "hash_ids": [7000 + i % 2, 8000 + i]}
        if i < 3:
            row["session_id"] = f"s{i}"
        rows.append(row)
    for i in range(3):  # second turns, ~170 ms apart from each other and from every other arrival
        rows.append({"session_id": f"s{i}", "delay": 350 + 150 * i, "input_length": 3 * TBS, "output_length": 3,
                     "hash_ids": [7000 + i % 2, 8000 + i, 9000 + i]})
    trace = load_rows(tmp_path, rows, tbs=TBS)
    cfg = config("round-robin")
    run, _ = replay(trace, cfg)
    assert_accounted(run, len(rows))
    live = by_line(run.requests)
    sim = by_line(simulate(trace, cfg).requests)
    assert all(r.status == "done" for r in live) and all(r.status == "done" for r in sim)
    assert [r.worker for r in live] == [r.worker for r in sim]
    assert [(r.session, r.turn) for r in sorted(live, key=lambda r: r.rid)] == \
        [(r.session, r.turn) for r in sorted(sim, key=lambda r: r.rid)]
    assert {r.worker for r in live} == {0, 1}
    # several requests really were in flight at once
    assert max(sum(1 for r in live if r.arrival <= x.arrival < r.last_token) for x in live) >= 2


# ---------------------------------------------------------------------------
# 3. faults: reported as failed with a reason, never lost; sessions go on


def test_faults_are_failed_with_reasons_and_sessions_go_on(tmp_path):
    rows = []
    for i in range(4):   # first turns of four sessions: the first two requests each fake gets
        rows.append({"timestamp": 10 * i, "input_length": 2 * TBS, "output_length": 4,
                     "hash_ids": [100 + i, 200 + i], "session_id": f"s{i}"})
    for i in range(4):   # their second turns
        rows.append({"session_id": f"s{i}", "delay": 150, "input_length": 2 * TBS, "output_length": 4,
                     "hash_ids": [100 + i, 300 + i]})
    for i in range(8):
        rows.append({"timestamp": 200 + 15 * i, "input_length": 2 * TBS, "output_length": 4,
                     "hash_ids": [400 + i, 500 + i]})
    trace = load_rows(tmp_path, rows, tbs=TBS)

    def setup(servers):
        servers[0].inject("http500")
        servers[0].inject("error_event", after_tokens=2)
        servers[1].inject("drop", after_tokens=1)
        servers[1].inject("hang")

    t0 = time.perf_counter()
    run, servers = replay(trace, config("round-robin"), setup=setup, request_timeout_s=0.4, health_every_s=0.1)
    assert time.perf_counter() - t0 < 10  # the hung request did not hold the run
    s = assert_accounted(run, len(rows))
    assert s["requests"]["failed"] == 4 and s["requests"]["completed"] == len(rows) - 4
    assert s["requests"]["not_sent"] == 0 and s["aborted"] is None
    assert not measured_is_complete(s)
    # every failure is named in the summary, one line per distinct reason
    assert sum(s["failure_reasons"].values()) == 4 and len(s["failure_reasons"]) == 4
    assert any("HTTP 500" in reason for reason in s["failure_reasons"])

    faults = {int(x["request_id"].removeprefix("dynosim-")): x["fault"]
              for srv in servers for x in srv.requests if x["fault"]}
    assert sorted(faults.values()) == ["drop", "error_event", "hang", "http500"]
    reasons = {"http500": ("HTTP 500",), "error_event": ("server error in stream",),
               "drop": ("connection dropped", "server disconnected"), "hang": ("no complete response within 0.4 s",)}
    by_rid = {r.rid: r for r in run.requests}
    df = run.frame().set_index("request_id")
    for rid, mode in faults.items():
        r = by_rid[rid]
        assert r.status == "failed" and any(m in r.failure for m in reasons[mode]), (mode, r.failure)
        assert df.loc[rid, "error"] and df.loc[rid, "status"] == r.status
        assert r.turn == 0
        # the session proceeds: its next turn was sent after the failure, and completed
        nxt = [x for x in run.requests if x.session == r.session and x.turn == 1]
        assert len(nxt) == 1 and nxt[0].status == "done"
        assert nxt[0].arrival >= r.arrival + 150 + (400 if mode == "hang" else 0)
    assert all(r.status == "done" for r in run.requests if r.rid not in faults)
    assert all(r.generated == r.osl for r in run.requests if r.status == "done")
    assert by_rid[next(k for k, v in faults.items() if v == "error_event")].generated == 2


# ---------------------------------------------------------------------------
# 4. a dead server ends the run


class FakeProcess:
    """What the watchdog needs of a launched server process: it dies ``after_s`` from now."""

    def __init__(self, after_s: float):
        self.t_death = time.monotonic() + after_s

    def alive(self) -> bool:
        return time.monotonic() < self.t_death

    def death_message(self) -> str:
        return "worker0 (http://127.0.0.1:1) exited with code -9; log /tmp/w0.log, last lines:\nKilled"


@pytest.mark.parametrize("how", ["process-died", "health-fails"])
def test_dead_server_aborts_the_run_and_nothing_is_lost(tmp_path, how):
    rows = [{"timestamp": 40 * i, "input_length": 2 * TBS, "output_length": 40, "hash_ids": [100 + i, 200 + i]}
            for i in range(30)]  # 1.2 s of arrivals, each request ~200 ms: always some in flight
    trace = load_rows(tmp_path, rows, tbs=TBS)
    kw = dict(health_every_s=0.05, health_failures=2)
    setup = None
    if how == "process-died":
        kw["servers"] = [FakeProcess(0.3)]
    else:
        def setup(servers):
            async def kill():
                await asyncio.sleep(0.3)
                await servers[1].stop()
            asyncio.get_running_loop().create_task(kill())
    run, servers = replay(trace, config("round-robin"), setup=setup, **kw)

    assert run.aborted
    expect = "server died: worker0 (http://127.0.0.1:1) exited with code -9" if how == "process-died" \
        else f"{servers[1].base_url}/health failed 2 times in a row"
    assert run.aborted.startswith(expect)
    s = assert_accounted(run, len(rows))
    assert s["aborted"] == run.aborted and not measured_is_complete(s)
    assert s["requests"]["not_sent"] > 0 and s["requests"]["failed"] > 0
    inflight = [r for r in run.requests if "in flight when the run was aborted" in (r.failure or "")]
    assert inflight and all(r.status == "failed" and r.failure for r in inflight)
    assert all(expect in r.failure and "\n" not in r.failure for r in inflight)
    assert all(r.status.ended for r in run.requests)
    # it ended at the death, not at the end of the trace: rows were never sent (not_sent > 0 above)
    assert s["requests"]["not_sent"] + sum(r.status == "failed" and r.failure.startswith("not sent") for r in run.requests) > 0


def test_abort_fails_requests_launched_but_never_started_and_those_queued_in_the_router(tmp_path):
    # One worker, and a router queue that holds a request while another is in prefill: request 0
    # is sent, 1-5 queue; each first token releases the next. The run is aborted right as request 2
    # is launched, before its task ever runs (what a watchdog firing in the same loop turn does).
    rows = [{"timestamp": i, "input_length": 2 * TBS, "output_length": 30, "hash_ids": [100 + i, 200 + i]}
            for i in range(6)] + [{"timestamp": 1000, "input_length": 2 * TBS, "output_length": 2,
                                   "hash_ids": [1, 2]}]
    trace = load_rows(tmp_path, rows, tbs=TBS)
    cfg = config("round-robin", workers=1, queue_threshold=0.0)

    class AbortOnLaunch(LiveReplay):
        def _launch(self, worker, req):
            super()._launch(worker, req)
            if req.rid == 2:
                self.abort("operator stop\nsecond line")

    async def main():
        srv = await FakeOpenAIServer(script=script()).start()
        try:
            return await AbortOnLaunch(trace, cfg, [srv.base_url], MODEL, health_every_s=0.2).run(), srv
        finally:
            await srv.stop()

    run, srv = asyncio.run(main())
    assert run.aborted == "operator stop\nsecond line"
    s = assert_accounted(run, len(rows))
    assert s["requests"] == {"total": 7, "completed": 0, "failed": 6, "unfinished": 0, "not_sent": 1}
    status = {r.rid: (r.status, r.failure) for r in run.requests}
    assert status[0] == status[1] == ("failed", "in flight when the run was aborted (operator stop)")
    assert all(status[i] == ("failed", "not sent, run aborted (operator stop)") for i in (2, 3, 4, 5))
    assert s["failure_reasons"] == {"not sent, run aborted (operator stop)": 4,
                                    "in flight when the run was aborted (operator stop)": 2}
    assert [x["request_id"] for x in srv.requests] == ["dynosim-0", "dynosim-1"]


def test_replay_rejects_bad_wiring(tmp_path):
    trace = load_rows(tmp_path, sharing_rows()[:2], tbs=TBS)
    with pytest.raises(ValueError, match="2 worker.*1 endpoint"):
        LiveReplay(trace, config("round-robin"), ["http://127.0.0.1:1"], MODEL)
    cfg = RunConfig(workers=1, router_mode="kv", trace_block_size=TBS, engine=fixed_engine())  # kv_events=True
    with pytest.raises(ValueError, match="--kv-events"):
        asyncio.run(LiveReplay(trace, cfg, [f"http://127.0.0.1:{closed_port()}"], MODEL).run())


# ---------------------------------------------------------------------------
# 5. compare()


def summary(ttft=100.0, itl=10.0, e2e=500.0, tps=1000.0, rps=5.0, reuse=0.5) -> dict:
    return {"ttft_ms": {"p50": ttft, "p90": 1.5 * ttft, "p99": 2 * ttft, "mean": 1.1 * ttft},
            "itl_ms": {"mean": itl, "p50": itl}, "e2e_ms": {"mean": e2e, "p50": e2e, "p99": 2 * e2e},
            "throughput": {"output_tokens_per_s": tps, "requests_per_s": rps}, "prefix_reuse_ratio": reuse}


def test_compare_errors_tolerances_gating_and_verdict():
    same = compare(summary(), summary())
    assert list(same["metric"]) == list(METRIC_KEYS)
    assert (same["error"] == 0).all() and same["ok"].all() and verdict(same)
    assert set(same.loc[same["gated"], "metric"]) == set(DEFAULT_GATE)
    kinds = dict(zip(same["metric"], same["error_kind"]))
    assert kinds.pop("prefix_reuse") == "abs" and set(kinds.values()) == {"rel"}

    def row(table, key):
        return table.set_index("metric").loc[key]

    # relative error = (predicted - measured) / measured; reuse by absolute difference
    t = compare(summary(ttft=100, reuse=0.50), summary(ttft=105, reuse=0.51))
    assert row(t, "ttft_p50")["error"] == pytest.approx(0.05) and row(t, "ttft_p50")["ok"]
    assert row(t, "prefix_reuse")["error"] == pytest.approx(0.01) and row(t, "prefix_reuse")["ok"]
    assert row(t, "prefix_reuse")["tolerance"] == 0.02 and row(t, "ttft_p50")["tolerance"] == 0.10
    assert verdict(t)
    t = compare(summary(ttft=100), summary(ttft=80))
    assert row(t, "ttft_p50")["error"] == pytest.approx(-0.20) and not row(t, "ttft_p50")["ok"]
    assert not verdict(t)
    assert not verdict(compare(summary(reuse=0.50), summary(reuse=0.55)))
    assert verdict(compare(summary(reuse=0.50), summary(reuse=0.55), reuse_tolerance=0.06))

    # tolerances: global, and per metric
    assert verdict(compare(summary(ttft=100), summary(ttft=80), tolerance=0.25))
    t = compare(summary(ttft=100), summary(ttft=80), tolerances={"ttft_p50": 0.3, "prefix_reuse": 0.0})
    assert row(t, "ttft_p50")["tolerance"] == 0.3 and row(t, "ttft_p50")["ok"] and row(t, "prefix_reuse")["ok"]
    assert not row(t, "ttft_p90")["ok"] and verdict(t)  # ttft_p90 is out, but not gated

    # gating: only the chosen metrics decide
    t = compare(summary(itl=10), summary(itl=20), gate=("ttft_p50",))
    assert not row(t, "itl_mean")["ok"] and not row(t, "itl_mean")["gated"] and verdict(t)
    assert not verdict(compare(summary(itl=10), summary(itl=20)))
    assert not verdict(compare(summary(e2e=500), summary(e2e=400), gate=("e2e_p99",)))
    assert verdict(compare(summary(e2e=500), summary(e2e=400)))

    # nothing to compare against is never within tolerance
    t = compare(summary(tps=0.0), summary())
    assert math.isnan(row(t, "output_tps")["error"]) and not row(t, "output_tps")["ok"] and not verdict(t)
    missing = summary()
    del missing["throughput"]
    t = compare(missing, summary())
    assert math.isnan(row(t, "output_tps")["measured"]) and not verdict(t)
    t = compare(summary(), summary(itl=float("nan")))
    assert not row(t, "itl_mean")["ok"] and not verdict(t)

    assert format_error(row(compare(summary(ttft=100), summary(ttft=105)), "ttft_p50")) == "+5.0%"
    assert format_error(row(compare(summary(reuse=0.5), summary(reuse=0.49)), "prefix_reuse")) == "-0.0100"
    assert format_error(row(compare(summary(tps=0.0), summary()), "output_tps")) == "n/a"


@pytest.mark.parametrize("kw", [{"gate": ("ttft_p50", "ttft_p95")}, {"tolerances": {"latency": 0.1}}])
def test_compare_rejects_unknown_metrics(kw):
    with pytest.raises(ValueError, match="unknown metric"):
        compare(summary(), summary(), **kw)


def test_plot_writes_a_png(tmp_path):
    table = compare(summary(tps=0.0), summary(ttft=120))  # a NaN error among them
    trace = load_rows(tmp_path, small_rows(), tbs=TBS)
    predicted, _ = summarize_state(simulate(trace, config("round-robin")))  # the frames validate plots
    measured = predicted.assign(error=None)
    measured.loc[3, ["status", "failure", "ttft_ms", "itl_ms"]] = ["failed", "HTTP 500", np.nan, np.nan]
    path = plot(table, measured, predicted.iloc[:0], tmp_path / "sub" / "cmp.png", title="t")
    assert path == tmp_path / "sub" / "cmp.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


# ---------------------------------------------------------------------------
# fakes on their own loop, for code that calls asyncio.run itself (workflow, CLI)


def fakes(n: int = 1):
    return fleet_of(n, script)


@pytest.fixture
def quick_plot(monkeypatch):
    """The comparison plot costs a second or two on a small box: record the call, write a stub."""
    calls = []

    def stub(table, mdf, pdf, path, title=""):
        calls.append((table, mdf, pdf, path, title))
        path.write_bytes(b"stub")
        return path
    monkeypatch.setattr(workflow, "plot", stub)
    return calls


def small_rows(n: int = 12) -> list[dict]:
    return [{"timestamp": 20 * i, "input_length": 2 * TBS, "output_length": 4, "hash_ids": [100 + i % 2, 200 + i]}
            for i in range(n)]


# ---------------------------------------------------------------------------
# 6. workflow.validate in attach mode


def test_validate_attach_writes_everything_and_passes(tmp_path, quick_plot):
    rows = small_rows()
    trace = load_rows(tmp_path, rows, tbs=TBS)
    cfg = config("round-robin")
    out = tmp_path / "out"
    said = []
    with fakes(2) as fleet:
        opts = ValidateOptions(out=out, model=MODEL, endpoints=[u + "/" for u in fleet.urls], tolerance=1e9,
                               reuse_tolerance=1.0)
        res = validate(trace, cfg, opts, say=said.append)
        assert sum(len(s.requests) for s in fleet.servers) == len(rows)
    assert res.exit_code == 0 and res.passed and res.complete
    assert res.live.urls == fleet.urls
    assert res.measured["requests"]["completed"] == len(rows) and res.predicted["requests"]["completed"] == len(rows)
    assert any("replaying 12 requests on 2 live worker(s), router round-robin" in m for m in said)
    assert any("12/12 requests finished (0 failed)" in m for m in said)

    doc = json.loads((out / "comparison.json").read_text())
    assert doc["passed"] is True and doc["complete"] is True and doc["exit_code"] == 0 and doc["aborted"] is None
    assert doc["config"]["workers"] == 2 and [m["metric"] for m in doc["metrics"]] == list(METRIC_KEYS)
    csv = pd.read_csv(out / "comparison.csv")
    assert list(csv["metric"]) == list(METRIC_KEYS) and csv["ok"].all()
    (table, mdf, pdf, path, title), = quick_plot  # the real plot: test_plot_writes_a_png
    assert path == out / "comparison.png" and path.exists() and not (out / "comparison.png.error.txt").exists()
    assert table is res.table and len(mdf) == len(pdf) == len(rows) and title == "2 worker(s), round-robin"
    for name in ("measured", "predicted"):
        s = json.loads((out / name / "summary.json").read_text())
        assert s["requests"]["completed"] == len(rows)
        df = pd.read_parquet(out / name / "requests.parquet")
        assert len(df) == len(rows) and (df["status"] == "done").all()
        assert len(pd.read_csv(out / name / "requests.csv")) == len(rows)
    mdf = pd.read_parquet(out / "measured" / "requests.parquet")
    assert {"error", "cached_tokens_reported"} <= set(mdf.columns)
    assert (mdf["output_tokens"] == 4).all() and mdf["error"].isna().all()
    assert json.loads((out / "measured" / "summary.json").read_text())["live"]["urls"] == fleet.urls
    # the same routing decisions on both sides
    pdf = pd.read_parquet(out / "predicted" / "requests.parquet")
    assert list(mdf.sort_values("line")["worker"]) == list(pdf.sort_values("line")["worker"])


def test_validate_exit_codes_out_of_tolerance_and_lost_requests(tmp_path, quick_plot):
    trace = load_rows(tmp_path, small_rows(), tbs=TBS)
    cfg = config("round-robin", workers=1)

    with fakes(1) as fleet:  # nothing measured matches a prediction to 1e-9
        res = validate(trace, cfg, ValidateOptions(out=tmp_path / "tight", model=MODEL, endpoints=fleet.urls,
                                                   tolerance=1e-9, reuse_tolerance=0.0))
    assert res.complete and not res.passed and res.exit_code == 1
    assert not res.table.set_index("metric").loc["ttft_p50", "ok"]
    assert json.loads((tmp_path / "tight" / "comparison.json").read_text())["exit_code"] == 1
    table, mdf, pdf, path, _ = quick_plot[-1]
    assert path == tmp_path / "tight" / "comparison.png" and len(mdf) == len(pdf) == trace.n_requests

    with fakes(1) as fleet:  # out of tolerance only on ungated metrics: passes
        res = validate(trace, cfg, ValidateOptions(out=tmp_path / "gate", model=MODEL, endpoints=fleet.urls,
                                                   tolerance=1e-9, reuse_tolerance=1.0, gate=("prefix_reuse",)))
    assert res.exit_code == 0 and not res.table["ok"].all()

    with fakes(1) as fleet:  # lost requests beat any verdict
        fleet.inject(0, "http500", count=2)
        res = validate(trace, cfg, ValidateOptions(out=tmp_path / "lost", model=MODEL, endpoints=fleet.urls,
                                                   tolerance=1e9, reuse_tolerance=1.0))
    assert res.passed and not res.complete and res.exit_code == 3
    assert res.measured["requests"]["failed"] == 2
    doc = json.loads((tmp_path / "lost" / "comparison.json").read_text())
    assert doc["complete"] is False and doc["exit_code"] == 3
    mdf = pd.read_csv(tmp_path / "lost" / "measured" / "requests.csv")
    assert (mdf["status"] == "failed").sum() == 2 and mdf["failure"].str.contains("HTTP 500").sum() == 2


def test_validate_keeps_the_numbers_when_the_plot_fails(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no display")
    monkeypatch.setattr(workflow, "plot", broken)
    trace = load_rows(tmp_path, small_rows(4), tbs=TBS)
    with fakes(1) as fleet:
        res = validate(trace, config("round-robin", workers=1),
                       ValidateOptions(out=tmp_path / "o", model=MODEL, endpoints=fleet.urls, tolerance=1e9,
                                       reuse_tolerance=1.0))
    assert res.exit_code == 0
    assert (tmp_path / "o" / "comparison.png.error.txt").read_text() == "RuntimeError: no display\n"
    assert (tmp_path / "o" / "comparison.csv").exists() and (tmp_path / "o" / "comparison.json").exists()


def test_validate_bad_input(tmp_path):
    trace = load_rows(tmp_path, small_rows(2), tbs=TBS)
    with pytest.raises(ValueError, match="--launch vllm.*--endpoint URL"):
        validate(trace, config("round-robin"), ValidateOptions(out=tmp_path / "a"))
    with pytest.raises(ValueError, match="--launch needs --model"):
        validate(trace, config("round-robin"), ValidateOptions(out=tmp_path / "b", launch="vllm"))
    cfg = RunConfig(workers=1, router_mode="kv", trace_block_size=TBS, engine=fixed_engine())  # kv_events=True
    with pytest.raises(ValueError, match="indexes KV events.*--kv-events"):
        validate(trace, cfg, ValidateOptions(out=tmp_path / "c", model=MODEL,
                                             endpoints=[f"http://127.0.0.1:{closed_port()}"]))


# ---------------------------------------------------------------------------
# 7. the command line

runner = CliRunner()


def cli(trace: Path, out: Path, *args: str):
    res = runner.invoke(app, ["validate", "--trace", str(trace), "--model", MODEL, "--timing", "fixed",
                              "--trace-block-size", str(TBS), "--block-size", str(BS), "--out", str(out), *args])
    return res, " ".join(res.output.split())  # rich wraps long lines


def test_cli_validate_attach_pass_and_fail(tmp_path, quick_plot):
    tp = write_trace(tmp_path / "t.jsonl", small_rows(10))
    with fakes(1) as fleet:
        url = fleet.urls[0]
        res, text = cli(tp, tmp_path / "ok", "--endpoint", url + "/", "--router-mode", "round-robin",
                        "--tolerance", "1e9", "--reuse-tolerance", "1")
        assert res.exit_code == 0, res.output
        assert "measured vs predicted" in text and "TTFT p50 (ms)" in text and "prefix reuse ratio" in text
        assert "live: 10 completed, 0 failed, 0 not sent" in text and "PASS" in text
        assert json.loads((tmp_path / "ok" / "comparison.json").read_text())["exit_code"] == 0
        cfg = json.loads((tmp_path / "ok" / "comparison.json").read_text())["config"]
        assert cfg["workers"] == 1 and cfg["router_mode"] == "round-robin" and cfg["engine"]["timing"] == "fixed"

        res, text = cli(tp, tmp_path / "tight", "--endpoint", url, "--router-mode", "round-robin",
                        "--tolerance", "0.000001")
        assert res.exit_code == 1, res.output
        assert "FAIL: out of tolerance" in text and "OUT" in text
    assert (tmp_path / "tight" / "comparison.csv").exists()


def test_cli_validate_bad_input_exits_2(tmp_path):
    tp = write_trace(tmp_path / "t.jsonl", small_rows(4))
    dead = f"http://127.0.0.1:{closed_port()}"

    res, text = cli(tp, tmp_path / "o")
    assert res.exit_code == 2 and "give --launch vllm (start servers) or --endpoint URL (attach)" in text

    res, text = cli(tp, tmp_path / "o", "--launch", "vllm", "--endpoint", dead)
    assert res.exit_code == 2 and "--launch and --endpoint exclude each other" in text

    res, text = cli(tp, tmp_path / "o", "--endpoint", dead)  # router mode kv (default) indexes KV events
    assert res.exit_code == 2
    assert "router mode 'kv' indexes KV events: give --kv-events once per --endpoint" in text
    assert "--no-router-kv-events" in text and "Traceback" not in res.output

    res, text = cli(tmp_path / "missing.jsonl", tmp_path / "o", "--endpoint", dead, "--router-mode", "round-robin")
    assert res.exit_code == 2 and "trace not found" in text


def test_cli_validate_unreachable_endpoint_fails_fast_with_exit_3(tmp_path, quick_plot):
    """An endpoint nobody listens on is named at once (before anything is sent), exit 3, with or without a model
    name (without one, validate asks the endpoint for it: that used to poll /health for 30 s, then a traceback)."""
    tp = write_trace(tmp_path / "t.jsonl", small_rows(6))
    url = f"http://127.0.0.1:{closed_port()}"
    for named in (True, False):
        args = ["validate", "--trace", str(tp), "--timing", "fixed", "--trace-block-size", str(TBS),
                "--block-size", str(BS), "--out", str(tmp_path / "o"), "--endpoint", url,
                "--router-mode", "round-robin", *(["--served-model-name", MODEL] if named else [])]
        t0 = time.perf_counter()
        res = runner.invoke(app, args)
        text = " ".join(res.output.split())
        assert time.perf_counter() - t0 < 15
        assert res.exit_code == 3, res.output
        assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
        assert f"error: --endpoint {url}: cannot connect (" in text and "Connect call failed" in text
        assert (f"asking {url} for its model …" in text) is not named
        assert not (tmp_path / "o" / "comparison.json").exists()


def test_cli_validate_endpoint_serving_another_model_is_bad_input(tmp_path):
    tp = write_trace(tmp_path / "t.jsonl", small_rows(4))
    with fakes(1) as fleet:
        res = runner.invoke(app, ["validate", "--trace", str(tp), "--timing", "fixed", "--trace-block-size",
                                  str(TBS), "--block-size", str(BS), "--out", str(tmp_path / "o"),
                                  "--endpoint", fleet.urls[0], "--router-mode", "round-robin",
                                  "--served-model-name", "other-model"])
        assert fleet.servers[0].requests == []        # nothing was sent
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert f"error: --endpoint {fleet.urls[0]} serves ['{MODEL}'], not 'other-model' (--served-model-name)" in text


def test_cli_validate_asks_an_endpoint_for_its_model(tmp_path, quick_plot):
    tp = write_trace(tmp_path / "t.jsonl", small_rows(4))
    with fakes(1) as fleet:
        res = runner.invoke(app, ["validate", "--trace", str(tp), "--timing", "fixed", "--trace-block-size",
                                  str(TBS), "--block-size", str(BS), "--out", str(tmp_path / "o"),
                                  "--endpoint", fleet.urls[0], "--router-mode", "round-robin",
                                  "--tolerance", "1e9", "--reuse-tolerance", "1"])
        assert {r["body"]["model"] for r in fleet.servers[0].requests} == {MODEL}
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert f"asking {fleet.urls[0]} for its model … {fleet.urls[0]} serves {MODEL}" in text


def test_prompt_hasher_prepares_every_prompt_before_the_clock_starts(tmp_path):
    from dynosim.router.hashing import block_hashes_of_tokens
    from dynosim.traces.mooncake import load_trace
    from dynosim.validate.prompts import PromptHasher

    rows = [{"timestamp": 0, "input_length": 100, "output_length": 2, "hash_ids": [1, 2]},
            {"timestamp": 5, "input_length": 120, "output_length": 2, "hash_ids": [1, 2]},
            {"timestamp": 9, "input_length": 100, "output_length": 3, "hash_ids": [1, 2]}]   # same prompt again
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    h = PromptHasher(32, 64, vocab_size=VOCAB)
    assert h.prepare(load_trace(p, trace_block_size=64)) == 2
    tokens = prompt_token_ids([1, 2], 120, trace_block_size=64, vocab_size=VOCAB)
    assert h.prompt((1, 2), 120) == tokens
    assert h.sequence_hashes((1, 2), 120) == block_hashes_of_tokens(tokens, 32)[1]
    assert h.sequence_hashes((1, 2), 100) == h.sequence_hashes((1, 2), 120)[:3]   # shared full blocks


def test_disaggregated_pools_given_by_count_predict_the_models_hand_off(tmp_path):
    """Pools given by their sizes alone (--prefill-workers/--decode-workers, or the endpoints) predict the
    hand-off as the model directory's KV shape (float32 on the CPU build) over tcp."""
    from dynosim.sim.simulation import simulate, summarize_state
    from dynosim.traces.mooncake import load_trace
    from dynosim.validate.live_deployment import live_disagg, model_kv_shape

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4,
                                                   "num_key_value_heads": 4, "hidden_size": 128,
                                                   "torch_dtype": "bfloat16"}))
    shape = model_kv_shape(str(model), "cpu")
    assert shape.bytes_per_token == 2 * 2 * 4 * 32 * 4                 # layers × K,V × heads × dim × fp32
    assert model_kv_shape(str(model), "cuda").bytes_per_token == 2 * 2 * 4 * 32 * 2
    assert model_kv_shape("", "cpu") is None and model_kv_shape(str(tmp_path / "none"), "cpu") is None
    d = live_disagg(2, 3, str(model), "cpu")
    assert (d.prefill_workers, d.decode_workers) == (2, 3)
    assert d.transfer.model == shape and d.transfer.link == "tcp"
    assert live_disagg(1, 1, "", "cpu").transfer.model is None
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot read the model's KV shape"):
        live_disagg(1, 1, str(model), "cpu")
    # the predicted run is a real disaggregated simulation
    trace_path = tmp_path / "t.jsonl"
    trace_path.write_text("".join(json.dumps({"timestamp": 10 * i, "input_length": 600, "output_length": 5,
                                              "hash_ids": [0, i + 1]}) + "\n" for i in range(6)))
    pc = RunConfig(router_mode="kv", disagg=live_disagg(2, 1, "", "cpu"))
    _, s = summarize_state(simulate(load_trace(trace_path), pc))
    assert s["requests"]["completed"] == 6 and s["num_gpus"] == 3


# ---------------------------------------------------------------------------
# 8. disaggregated: prefill -> NIXL-style hand-off -> decode, against fakes


def pd_config(mode: str, prefill: int = 2, decode: int = 2) -> RunConfig:
    """``config(mode)`` as a disaggregated deployment: ``prefill`` + ``decode`` workers."""
    from dynosim.config import DisaggConfig

    return config(mode).model_copy(update={"disagg": DisaggConfig(prefill_workers=prefill, decode_workers=decode)})


async def _replay_pd(trace, cfg, setup=None, **kw):
    n_pre, n_dec = cfg.disagg.prefill_workers, cfg.disagg.decode_workers
    servers = [await FakeOpenAIServer(script=script()).start() for _ in range(n_pre + n_dec)]
    try:
        if setup is not None:
            setup(servers)
        urls = [s.base_url for s in servers]
        replay = LiveReplay(trace, cfg, urls[:n_pre], MODEL, decode_urls=urls[n_pre:], health_every_s=0.2, **kw)
        run = await replay.run()
    finally:
        for s in servers:
            await s.stop()
    return run, servers[:n_pre], servers[n_pre:]


def test_disaggregated_replay_hands_every_request_off_after_a_warm_up_per_pair(tmp_path):
    rows = small_rows(10)
    trace = load_rows(tmp_path, rows, tbs=TBS)
    run, prefill, decode = asyncio.run(_replay_pd(trace, pd_config("round-robin", 2, 2)))
    s = assert_accounted(run, len(rows))
    assert s["requests"]["completed"] == len(rows) and measured_is_complete(s)
    assert s["disaggregated"]["handoffs"] == len(rows)
    # one warm-up hand-off per (prefill, decode) pair, before any trace request, none failed
    assert s["live"]["warmup"] == {"attempts": 4, "errors": []}
    for srv in prefill + decode:
        ids = [x["request_id"] for x in srv.requests]
        n_warm = sum(i.startswith("dynosim-warmup-") for i in ids)
        assert n_warm == 2 and all(i.startswith("dynosim-warmup-") for i in ids[:n_warm])
    # prefill servers answered max_tokens=1 hand-offs; decode servers pulled KV from both prefill engines
    trace_pre = [x for srv in prefill for x in srv.requests if not x["request_id"].startswith("dynosim-warmup")]
    assert len(trace_pre) == len(rows)
    assert all(x["body"]["max_tokens"] == 1 and x["body"]["kv_transfer_params"]["do_remote_decode"]
               for x in trace_pre)
    assert all(srv.kv_peers == {p.engine_id for p in prefill} for srv in decode)
    assert sum(srv.kv_transfers for srv in decode) == len(rows) + 4
    # the decode request carries the prefill answer's parameters, and the trace's output length
    by_id = {x["request_id"]: x["body"] for srv in decode for x in srv.requests}
    for r in run.requests:
        body = by_id[f"dynosim-{r.rid}"]
        assert body["max_tokens"] == r.osl and body["kv_transfer_params"]["do_remote_prefill"] is True
    df = run.frame()
    assert set(df["decode_worker"]) == {0, 1} and (df["prefill_ms"] > 0).all()
    # prefix hits are the prefill servers': round-robin puts rows i and i+2 (same first hash id, 2 blocks)
    # on one server; the warm-up prompts share nothing with the trace, so they add no hit
    assert df.sort_values("line")["cached_tokens_reported"].tolist() == [0, 0] + [TBS] * (len(rows) - 2)


def test_disaggregated_warm_up_retries_a_failed_kv_load_and_loses_no_request(tmp_path):
    rows = small_rows(6)
    trace = load_rows(tmp_path, rows, tbs=TBS)
    run, _, decode = asyncio.run(_replay_pd(trace, pd_config("round-robin", 1, 1),
                                            setup=lambda srv: srv[1].inject("kv_load_fail"), warmup_retry_s=0.01))
    s = assert_accounted(run, len(rows))
    assert s["requests"]["completed"] == len(rows) and measured_is_complete(s)
    assert s["live"]["warmup"]["attempts"] == 2
    (err,) = s["live"]["warmup"]["errors"]
    assert err.startswith("prefill 0 -> decode 0, attempt 1:") and "HTTP 500" in err and "KV load" in err
    assert [x["request_id"] for x in decode[0].requests[:2]] == ["dynosim-warmup-p0-d0-0", "dynosim-warmup-p0-d0-1"]


def test_disaggregated_warm_up_that_keeps_failing_aborts_before_the_clock_starts(tmp_path):
    rows = small_rows(6)
    trace = load_rows(tmp_path, rows, tbs=TBS)
    run, prefill, decode = asyncio.run(_replay_pd(
        trace, pd_config("round-robin", 1, 1), setup=lambda srv: srv[1].inject("kv_load_fail", count=3),
        warmup_retry_s=0.01))
    s = assert_accounted(run, len(rows))
    assert s["requests"]["not_sent"] == len(rows) and not measured_is_complete(s)
    assert s["aborted"].startswith(f"the KV hand-off from prefill {prefill[0].base_url} to decode "
                                   f"{decode[0].base_url} failed 3 times before the run; last: ")
    assert "KV load from engine" in s["aborted"] and len(s["live"]["warmup"]["errors"]) == 3
    # no trace request reached either server
    assert all(x["request_id"].startswith("dynosim-warmup-") for srv in prefill + decode for x in srv.requests)


def test_cli_validate_attach_disaggregated_and_a_hand_off_that_never_works(tmp_path, quick_plot):
    tp = write_trace(tmp_path / "t.jsonl", small_rows(8))
    with fakes(2) as fleet:
        prefill, decode = fleet.urls
        args = ("--endpoint", prefill, "--decode-endpoint", decode, "--router-mode", "round-robin",
                "--tolerance", "1e9", "--reuse-tolerance", "1")
        res, text = cli(tp, tmp_path / "ok", *args)
        assert res.exit_code == 0, res.output
        measured = json.loads((tmp_path / "ok" / "measured" / "summary.json").read_text())
        assert measured["disaggregated"]["handoffs"] == 8 and measured["live"]["warmup"]["attempts"] == 1
        predicted = json.loads((tmp_path / "ok" / "predicted" / "summary.json").read_text())
        assert predicted["num_gpus"] == 2 and predicted["requests"]["completed"] == 8

        fleet.inject(1, "kv_load_fail", count=3)
        res, text = cli(tp, tmp_path / "bad", *args)
    assert res.exit_code == 3 and isinstance(res.exception, SystemExit), res.output
    assert f"run aborted: the KV hand-off from prefill {prefill} to decode {decode} failed 3 times" in text
    assert "live: 0 completed, 0 failed, 8 not sent" in text and "INCOMPLETE: requests lost" in text
    assert json.loads((tmp_path / "bad" / "comparison.json").read_text())["exit_code"] == 3


def test_cli_validate_config_with_a_disagg_section_launches_and_attaches_disaggregated(tmp_path, monkeypatch,
                                                                                       quick_plot):
    """``validate --config`` whose file has a disagg section is a disaggregated deployment live (the servers
    launched, the endpoints attached) and in the prediction: the same pools, the file's hand-off."""
    import yaml
    from types import SimpleNamespace

    from dynosim.validate.servers import ServerError

    tp = write_trace(tmp_path / "t.jsonl", small_rows(8))
    conf = tmp_path / "pd.yaml"
    conf.write_text(yaml.safe_dump({"disagg": {"prefill_workers": 1, "decode_workers": 2,
                                               "transfer": {"link": "nvlink"}}}))
    # launched: the file's pools are the servers started (the test stops before waiting for any)
    started = []

    def fake_start(name, spec, log_dir, engine, python):
        started.append((name, spec.role, spec.kv_events_endpoint is not None,
                        spec.nixl_side_channel_port is not None, spec.gpu_ids))
        return SimpleNamespace(url=f"http://127.0.0.1:{spec.port}")

    async def not_ready(servers, model, timeout_s):
        raise ServerError("stopped by the test before the servers were ready")
    monkeypatch.setattr(workflow, "start_server", fake_start)
    monkeypatch.setattr(workflow, "wait_ready", not_ready)
    monkeypatch.setattr(workflow, "stop_all", lambda servers: None)
    res, text = cli(tp, tmp_path / "launched", "--launch", "vllm", "--device", "cuda", "--config", str(conf),
                    "--router-mode", "kv")
    assert res.exit_code == 3 and "stopped by the test" in text, res.output
    assert started == [("prefill0", "prefill", True, True, (0,)), ("decode0", "decode", False, True, (1,)),
                       ("decode1", "decode", False, True, (2,))]
    # attached: one --endpoint per prefill worker, one --decode-endpoint per decode worker
    with fakes(3) as fleet:
        res, text = cli(tp, tmp_path / "attached", "--config", str(conf), "--endpoint", fleet.urls[0],
                        "--decode-endpoint", fleet.urls[1], "--decode-endpoint", fleet.urls[2],
                        "--router-mode", "round-robin", "--tolerance", "1e9", "--reuse-tolerance", "1")
        assert res.exit_code == 0, res.output
        trace_requests = [[x for x in srv.requests if not x["request_id"].startswith("dynosim-warmup")]
                          for srv in fleet.servers]
    assert [len(r) for r in trace_requests] == [8, 4, 4]                # round robin over the two decode workers
    assert "replaying 8 requests on 1 prefill + 2 decode live worker(s)" in text
    out = tmp_path / "attached"
    measured = json.loads((out / "measured" / "summary.json").read_text())
    assert measured["disaggregated"]["decode_workers"] == 2 and measured["disaggregated"]["handoffs"] == 8
    predicted = json.loads((out / "predicted" / "summary.json").read_text())
    assert predicted["num_gpus"] == 3 and predicted["requests"]["completed"] == 8
    doc = json.loads((out / "comparison.json").read_text())["config"]
    assert (doc["disagg"]["prefill_workers"], doc["disagg"]["decode_workers"]) == (1, 2)
    assert doc["disagg"]["transfer"]["link"] == "nvlink"
    # both sides chose the same decode worker for every request
    mdf = pd.read_parquet(out / "measured" / "requests.parquet").sort_values("line")
    pdf = pd.read_parquet(out / "predicted" / "requests.parquet").sort_values("line")
    assert list(mdf["decode_worker"]) == list(pdf["worker"])


@pytest.mark.parametrize("deployment,args,message", [
    ({"disagg": {"prefill_workers": 1, "decode_workers": 2}}, ["--decode-endpoint", "D1"],
     "error: --decode-endpoint: the deployment has 2 decode worker(s) but 1 --decode-endpoint was given"),
    ({"disagg": {"prefill_workers": 1, "decode_workers": 1}}, [],
     "error: --decode-endpoint: the deployment has 1 decode worker(s) but 0 --decode-endpoint were given"),
    ({"disagg": {"prefill_workers": 2, "decode_workers": 1}}, ["--decode-endpoint", "D1"],
     "error: --endpoint: the deployment has 2 prefill worker(s) but 1 --endpoint was given"),
    ({"workers": 2}, [], "error: --endpoint: the deployment has 2 worker(s) but 1 --endpoint was given"),
])
def test_cli_validate_attach_counts_must_match_the_deployments_pools(tmp_path, deployment, args, message):
    """Attached endpoints are the pools of the --config file's deployment: a count that differs is an error
    naming the flag, before any endpoint is contacted."""
    import yaml

    tp = write_trace(tmp_path / "t.jsonl", small_rows(4))
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(deployment))
    dead = f"http://127.0.0.1:{closed_port()}"
    args = [dead if a == "D1" else a for a in args]
    res, text = cli(tp, tmp_path / "o", "--config", str(conf), "--endpoint", dead, "--router-mode", "round-robin",
                    *args)
    assert res.exit_code == 2, res.output
    assert message in text and "cannot connect" not in text and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_validate_attach_counts_are_checked_in_the_library_too(tmp_path):
    trace = load_rows(tmp_path, small_rows(2), tbs=TBS)
    dead = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ValueError, match="--decode-endpoint: the deployment has 2 decode worker"):
        validate(trace, pd_config("round-robin", 1, 2), ValidateOptions(out=tmp_path / "a", model=MODEL,
                                                                        endpoints=[dead], decode_endpoints=[dead]))
    with pytest.raises(ValueError, match="--decode-endpoint: the deployment has no decode pool"):
        validate(trace, config("round-robin", workers=1),
                 ValidateOptions(out=tmp_path / "b", model=MODEL, endpoints=[dead], decode_endpoints=[dead]))
    with pytest.raises(ValueError, match="the deployment has 1 prefill and 2 decode worker"):
        LiveReplay(trace, pd_config("round-robin", 1, 2), [dead], MODEL, decode_urls=[dead])


def test_disaggregated_replay_routes_decode_with_the_simulators_decode_router(tmp_path):
    """Live decode is chosen by the decode router build_deployment wires for the simulator too: a fresh
    deploy.routers.decode_router fed the same routes, first tokens and completions (at the same times) makes
    every choice the live run made; each hand-off is routed once, then told of its first token and completion."""
    from dynosim.deploy.frontend import DisaggFrontend
    from dynosim.deploy.routers import decode_router
    from dynosim.request import Request

    built, calls = [], []

    class Observed(DisaggFrontend):
        """The frontend build_deployment makes, recording every call on the decode router it was given."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            r = self.decode_router
            built.append(r)
            for name in ("route", "on_first_token", "on_complete"):
                def wrapped(req, now, fn=getattr(r, name), name=name):
                    out = fn(req, now)
                    calls.append((name, req, now, out))
                    return out
                setattr(r, name, wrapped)

    # requests 8 ms apart that decode for ~60 ms, prompts of different lengths: several decodes at once, so
    # the kv decode router's choice depends on the blocks each decode worker holds
    rows = [{"timestamp": 8 * i, "input_length": TBS * (1 + i % 3), "output_length": 8 + 4 * (i % 2),
             "hash_ids": [300 + i, 400 + i, 500 + i][:1 + i % 3]} for i in range(16)]
    trace = load_rows(tmp_path, rows, tbs=TBS)
    cfg = pd_config("kv", 2, 3)
    run, _, _ = asyncio.run(_replay_pd(trace, cfg, frontend_cls=Observed))
    s = assert_accounted(run, len(rows))
    assert s["requests"]["completed"] == len(rows)
    router, = built
    assert router.workers == [0, 1, 2] and not router.wants_kv_events
    assert type(router.policy) is type(decode_router(cfg).policy)
    by_rid = {r.rid: r for r in run.requests}
    for rid in by_rid:
        mine = [(n, req) for n, req, _, _ in calls if req.rid == rid]
        assert [n for n, _ in mine] == ["route", "on_first_token", "on_complete"]
        assert all(req is by_rid[rid] for _, req in mine)          # the trace's request itself, not a copy
    # the same sequence through a fresh decode router of the same deployment: the same choices
    fresh, copies, choices = decode_router(cfg), {}, {}
    for name, req, now, out in calls:
        if name == "route":
            c = copies[req.rid] = Request(req.rid, req.isl, req.osl, req.hash_ids, req.seq_hashes, now)
            assert fresh.route(c, now) == out, req.rid
            choices[req.rid] = out
        else:
            getattr(fresh, name)(copies[req.rid], now)
    assert choices == run.decode_worker and len(set(choices.values())) > 1
    df = run.frame().set_index("request_id")
    assert all(df.loc[rid, "decode_worker"] == w for rid, w in choices.items())
    # nothing is left on either router once every request is done
    assert all(v == 0 for v in router.load.prefill_tokens)
