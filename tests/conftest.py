"""Shared helpers for the engine and simulation-core tests.

- ``write_trace``: a Mooncake JSONL file from row dicts.
- ``make_request``: a hand-built ``Request`` whose full prompt blocks get
  distinct integer sequence hashes (shared between requests when asked).
- ``drive``: steps a ``VllmScheduler`` on its own logical clock, the way the
  simulator's worker does, and records every token time.
- ``traces``: a hypothesis strategy for small random traces (shared prefixes,
  tied and spread arrivals, multi-turn sessions).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Reproducible CI: the same examples every run, no wall-clock deadlines on a noisy 2-core box.
settings.register_profile("dynosim", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("dynosim")

from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.request import Request

# ---------------------------------------------------------------------------
# polynomial timing, written out independently of dynosim's implementation


def poly_prefill(t: int) -> float:
    return 4.209989e-07 * t * t + 1.518344e-02 * t + 16.50142 if t > 0 else 0.0


def poly_decode(active_kv_tokens: int, total_kv_tokens: int) -> float:
    p = min(active_kv_tokens / total_kv_tokens, 1.0)
    return max(1.0, -25.74 * p * p + 54.01 * p + 5.74)


def ns(ms: float) -> float:
    return round(ms * 1e6) / 1e6


# ---------------------------------------------------------------------------
# traces on disk


def write_trace(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------
# hand-built requests and a logical-clock driver


def make_request(rid: int, isl: int, osl: int, bs: int, *, prefix: tuple[int, ...] = (), tag: int | None = None,
                 arrival: float = 0.0) -> Request:
    """A request of ``isl`` prompt tokens; its full blocks hash to ``prefix`` then private ints.

    Private hashes are ``(tag or rid) * 10_000 + j`` so distinct requests never
    share a block unless they share ``prefix`` (or the same ``tag``).
    """
    n_full = isl // bs
    base = (rid if tag is None else tag) * 10_000 + 1_000_000
    seq = list(prefix[:n_full]) + [base + j for j in range(len(prefix), n_full)]
    return Request(rid, isl, osl, tuple(seq), seq, arrival)


@dataclass
class Drive:
    """Token times recorded by ``drive``: per request the end time of every emitting pass."""

    tokens: dict[int, list[float]] = field(default_factory=dict)
    passes: list[tuple[float, float]] = field(default_factory=list)  # (start, duration)
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    preempted: int = 0
    now: float = 0.0

    def first(self, rid: int) -> float:
        return self.tokens[rid][0]

    def gaps(self, rid: int) -> list[float]:
        t = self.tokens[rid]
        return [b - a for a, b in zip(t, t[1:])]


def drive(sched: VllmScheduler, arrivals: list[tuple[float, Request]] | None = None,
          max_passes: int = 100_000, until: float = math.inf, state: Drive | None = None,
          on_pass=None) -> Drive:
    """Run ``sched`` pass by pass on a logical clock until it is idle and nothing is left to arrive.

    ``arrivals`` are (time, request) pairs; a request arriving at or before a
    pass start is admitted to the queue before that pass (Dynamo's ordering).
    """
    st_ = state if state is not None else Drive()
    pending = sorted(arrivals or [], key=lambda x: x[0])
    k = 0
    for _ in range(max_passes):
        while k < len(pending) and pending[k][0] <= st_.now:
            sched.add(pending[k][1])
            k += 1
        if not sched.has_work:
            if k >= len(pending):
                return st_
            st_.now = max(st_.now, pending[k][0])
            continue
        if st_.now >= until:
            return st_
        res = sched.step()
        end = st_.now + res.duration_ms
        st_.passes.append((st_.now, res.duration_ms))
        st_.preempted += res.preempted
        st_.failed.extend(r.rid for r in res.failed)
        for r in res.emitted:
            st_.tokens.setdefault(r.rid, []).append(end)
        st_.completed.extend(r.rid for r in res.completed)
        if on_pass is not None:
            on_pass(st_.now, end, res)
        if res.duration_ms <= 0 and not (res.emitted or res.scheduled_tokens or res.preempted):
            # nothing could run: jump to the next arrival, else we are stuck
            if k >= len(pending):
                if res.failed and sched.has_work:
                    continue
                raise AssertionError(f"scheduler stuck at {st_.now} with work left")
            st_.now = max(st_.now, pending[k][0])
            continue
        st_.now = end
    raise AssertionError("max_passes exceeded")


# ---------------------------------------------------------------------------
# hypothesis: small random traces


@st.composite
def trace_rows(draw, *, max_requests: int = 14, max_isl: int = 900, max_osl: int = 40,
               sessions: bool = True, tbs: int = 128) -> list[dict]:
    """Rows of a small Mooncake trace with shared prefixes.

    Prompts draw their leading hash_ids from a few "documents", so requests
    share prefixes of random depth; arrival gaps are often zero (ties) or
    short (mid-pass and mid-decode-stretch arrivals). Some rows continue a
    session (closed-loop, with a delay after the previous turn completes).
    """
    n = draw(st.integers(1, max_requests))
    rows: list[dict] = []
    t = 0
    open_sessions: list[str] = []
    uniq = 10_000
    for i in range(n):
        isl = draw(st.integers(1, max_isl))
        osl = draw(st.integers(1, max_osl))
        n_ids = -(-isl // tbs)
        doc = draw(st.integers(0, 3))
        shared = draw(st.integers(0, n_ids))
        ids = [doc * 1000 + j for j in range(shared)]
        for _ in range(n_ids - shared):
            uniq += 1
            ids.append(uniq)
        row: dict = {"input_length": isl, "output_length": osl, "hash_ids": ids}
        if sessions and open_sessions and draw(st.integers(0, 3)) == 0:
            row["session_id"] = draw(st.sampled_from(open_sessions))
            row["delay"] = draw(st.sampled_from([0, 0.5, 7, 40]))
        else:
            t += draw(st.sampled_from([0, 0, 1, 3, 17, 60, 250]))
            row["timestamp"] = t
            if sessions and draw(st.booleans()):
                sid = f"s{i}"
                row["session_id"] = sid
                open_sessions.append(sid)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# running the simulator with hooks


def load_rows(directory: Path, rows: list[dict], tbs: int = 128, name: str = "trace.jsonl"):
    """Write ``rows`` as JSONL under ``directory`` and load them as a Trace."""
    from dynosim.traces.mooncake import load_trace

    return load_trace(write_trace(Path(directory) / name, rows), trace_block_size=tbs)


def request_key(r: Request) -> tuple:
    """What must not depend on how the simulation was stepped."""
    return (r.rid, r.status, r.worker, r.reused, r.first_reused, r.generated, r.preemptions, r.session, r.turn)


def assert_same_requests(a: list[Request], b: list[Request], tol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert request_key(x) == request_key(y)
        for f in ("arrival", "routed", "first_token", "last_token"):
            u, v = getattr(x, f), getattr(y, f)
            assert (math.isnan(u) and math.isnan(v)) or abs(u - v) <= tol, (x.rid, f, u, v)


def expanded_gaps(state) -> list[float]:
    values, counts = state.gaps.arrays()
    out: list[float] = []
    for v, c in zip(values.tolist(), counts.tolist()):
        out.extend([v] * c)
    return sorted(out)


@st.composite
def engine_args(draw, *, rows: list[dict] | None = None, timings: tuple[str, ...] = ("polynomial",),
                caching: tuple[bool, ...] = (True,), modes: tuple[str, ...] = ("lifo",)) -> dict:
    """Small engines: tiny caches (eviction, preemption, rejection), tight budgets and seat limits.

    Given the trace ``rows``, the cache is sized around its largest request
    (from a bit too small for it to about three of them), so requests
    mostly fit alone but not together: eviction and preemption are common.
    """
    bs = draw(st.sampled_from([16, 64]))
    if rows:
        biggest = max(-(-(r["input_length"] + r["output_length"] - 1) // bs) for r in rows)
        blocks = max(1, int(biggest * draw(st.sampled_from([0.8, 1.0, 1.2, 1.6, 2.2, 3.0]))))
    else:
        blocks = draw(st.integers(6, 120)) if bs == 16 else draw(st.integers(2, 30))
    timing = draw(st.sampled_from(timings))
    return {
        "block_size": bs,
        "num_gpu_blocks": blocks,
        "max_num_seqs": draw(st.sampled_from([1, 2, 3, 8, 64])),
        "max_num_batched_tokens": draw(st.sampled_from([64, 200, 1024, 8192])),
        "enable_prefix_caching": draw(st.sampled_from(caching)),
        "enable_chunked_prefill": draw(st.sampled_from([True, True, False])),
        "preemption_mode": draw(st.sampled_from(modes)),
        "timing": timing,
        "timing_profile": "h200_llama3.1-8b-fp8_vllm" if timing == "interpolated" else None,
    }


@st.composite
def scenarios(draw, *, max_requests: int = 14, max_isl: int = 400, max_osl: int = 100, **engine_kw):
    """(rows, engine args) with the cache sized against the trace."""
    rows = draw(trace_rows(max_requests=max_requests, max_isl=max_isl, max_osl=max_osl))
    return rows, draw(engine_args(rows=rows, **engine_kw))


def router_modes() -> list[str]:
    """Routing policies the random simulations draw from (those that need no per-request hints)."""
    from dynosim.router.policies import POLICIES

    return [m for m in ("round-robin", "random", "least-loaded", "kv") if m in POLICIES]


def fifo_at_the_brink():
    """A FIFO engine of 15 blocks of 16 tokens where the next pass must preempt: X and Y (1-token prompts,
    60 outputs) decode, P (200-token prompt) is mid-prefill; returns ``(scheduler, x, y, p)``."""
    from dynosim.engines.mocker.config import MockerArgs
    from dynosim.engines.mocker.scheduler import VllmScheduler

    s = VllmScheduler(MockerArgs(block_size=16, num_gpu_blocks=15, max_num_seqs=4, max_num_batched_tokens=64,
                                 preemption_mode="fifo"))
    x, y, p = make_request(0, 1, 60, 16), make_request(1, 1, 60, 16), make_request(2, 200, 2, 16)
    s.add(x)
    s.add(y)
    for _ in range(14):
        s.step()
    s.add(p)
    s.step()
    s.step()
    return s, x, y, p
