"""Seeded synthetic agentic multi-turn traces in Mooncake JSONL.

``synth_agentic(cfg)`` returns rows (dicts, in file order) that
``dynosim.traces.mooncake.load_trace`` and Dynamo's ``--trace-format
mooncake`` replay accept; ``write_jsonl(rows, path)`` writes them. The same
``SynthConfig`` (same seed) gives byte-identical files.

The workload
------------

- **Sessions** (agent runs) arrive as a Poisson process of ``rate`` per
  second, either ``num_sessions`` of them or all that arrive within
  ``duration_s``. Each belongs to one of ``n_apps`` apps (drawn with
  ``app_weights``).
- **System prompt.** Every app has one system prompt whose length is drawn
  once from ``system_prompt_tokens``. Its *full* trace blocks have the same
  ``hash_ids`` in every session of the app; a partial last block is mixed
  with the session's first message, so it is private to the session.
- **Turns.** Turn 1's prompt is the system prompt plus a first user message
  (``first_message_tokens``). Turn k+1's prompt is turn k's prompt, plus
  turn k's output, plus a new tool/user message (``tool_message_tokens``).
  So ``input_length`` grows by ``output_length + message`` per turn, and a
  turn's ``hash_ids`` are the previous turn's ``hash_ids`` followed by
  ``ceil(new_input / B) - ceil(old_input / B)`` fresh ids (B =
  ``trace_block_size``); always ``len(hash_ids) == ceil(input_length / B)``.
  The number of turns is drawn from ``turns``; a session also ends early when
  its next prompt would not fit in ``max_context_tokens`` (the last message
  is truncated to fit when there is room for at least one token).
- **Tool-call gaps.** A later turn's ``delay`` (ms after the previous turn of
  the session *completes*, as the loader and Dynamo read it) is drawn from
  ``tool_gap_ms`` (lognormal or gamma, mean and coefficient of variation).
- **Sub-agents.** After a turn that is not the last (and below
  ``max_subagent_depth``), with probability ``subagent_prob`` the agent fans
  out to k sub-agents (k from ``subagent_fanout``). Each is a session of its
  own (``session_id`` = parent's + ``.t<turn>.<j>``, turns from
  ``subagent_turns``) whose first prompt is the parent turn's prompt plus a
  task message (``first_message_tokens``): it shares the parent's full blocks
  and then diverges. The parent's next message is the sub-agents' final
  outputs (their results), and its delay is the time the slowest one is
  expected to take.
- **Hints** (NeMo Agent Toolkit style, ``nvext.agent_hints``) on every row:
  ``prefix_id`` (the session id: one per agent or sub-agent run),
  ``total_requests`` (turns in that session), ``osl`` (expected output
  tokens), ``iat`` (expected gap in ms) and ``priority`` (the app's entry of
  ``app_priorities``, inherited by sub-agents; 0 when not given). With
  ``hints="expected"`` osl/iat are the configured means (what an agent
  framework could know); ``hints="actual"`` puts the row's true output
  length and the true delay before the session's next turn (oracle hints).

Approximations (documented choices, not Dynamo facts)
-----------------------------------------------------

- **Sub-agents are open-loop.** The loader (like Dynamo's) only chains turns
  of one ``session_id``, with delays after the previous turn *of the same
  session*. A sub-agent therefore cannot be started "when the parent's turn
  completes in the replay"; its first turn has a fixed ``timestamp`` = the
  parent turn's *nominal* completion time plus a spawn gap (drawn from
  ``tool_gap_ms``), and the parent's next turn waits a fixed ``delay`` = the
  nominal time until the slowest sub-agent finishes. Nominal times use a
  load-free service model: ``new prompt tokens / nominal_prefill_tokens_per_s
  + output_length * nominal_decode_ms_per_token`` per turn (new tokens = the
  tokens added since the session's previous prompt, or since the shared
  prefix for a first turn, taken as cached). Under load the replay's real
  completions are later than nominal, so sub-agents start early relative
  to their parent and the parent does not truly wait for them.
- **Partial blocks.** A prompt's last trace block is usually partial. The next
  turn of the same session keeps its id (the block only grows), which is
  exactly what engine-level caching needs: Dynamo's replay synthesises the
  tokens of a trace block from its id, so the engine blocks inside the
  partial block hit in the next turn. Each id still sits at one position
  after one predecessor (Mooncake's chaining rule). A sub-agent shares only
  the parent prompt's *full* blocks; its block at the fork point is fresh
  (the contents diverge inside it).
- Timestamps and delays are whole milliseconds; the first session arrives at
  its Poisson time, not at 0 (the loader shifts the start to 0).

Rows are in nominal-time order: first-turn timestamps are non-decreasing and
every later turn comes after its session's earlier turns, as the loader
requires.
"""

from __future__ import annotations

import json
import math
import os
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Dist", "SynthConfig", "synth_agentic", "write_jsonl"]

_MAX_EXPECTED_SESSIONS = 1_000_000


class Dist(BaseModel):
    """A positive random quantity: lognormal or gamma with this mean and CV, rounded, clipped to [min, max]."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lognormal", "gamma"] = Field("lognormal", description="distribution family")
    mean: float = Field(gt=0, allow_inf_nan=False, description="mean before clipping")
    cv: float = Field(1.0, ge=0, allow_inf_nan=False, description="coefficient of variation (0: constant)")
    min: int = Field(0, ge=0, description="clip below (inclusive)")
    max: int | None = Field(None, ge=0, description="clip above (inclusive); None: no limit")

    @model_validator(mode="after")
    def _ordered(self) -> Dist:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def draw(self, rng: np.random.Generator) -> int:
        if self.cv == 0:
            x = self.mean
        elif self.kind == "lognormal":
            s2 = math.log1p(self.cv * self.cv)
            x = rng.lognormal(math.log(self.mean) - s2 / 2, math.sqrt(s2))
        else:
            shape = 1.0 / (self.cv * self.cv)
            x = rng.gamma(shape, self.mean / shape)
        v = max(int(round(min(x, 1e18))), self.min)  # min(): no OverflowError on an inf draw
        return v if self.max is None else min(v, self.max)


def _dist(**kw):
    return Field(default_factory=lambda: Dist(**kw))


# Distributions whose draws are token or turn counts: at least 1 is used, so max must allow it.
_COUNT_DISTS = ("system_prompt_tokens", "first_message_tokens", "tool_message_tokens", "output_tokens",
                "turns", "subagent_fanout", "subagent_turns")


class SynthConfig(BaseModel):
    """Knobs of ``synth_agentic``; lengths in tokens, times in ms unless named ``_s``."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, description="numpy Generator seed")
    rate: float = Field(0.5, gt=0, allow_inf_nan=False, description="top-level session arrivals per second (Poisson)")
    num_sessions: int | None = Field(100, ge=1, description="top-level sessions (default when duration_s is not given)")
    duration_s: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="instead of num_sessions: every session arriving in [0, duration_s)")
    trace_block_size: int = Field(512, gt=0, description="tokens per hash_id")
    n_apps: int = Field(4, ge=1, description="apps, each with its own shared system prompt")
    app_weights: list[float] | None = Field(None, description="relative app popularity (None: uniform)")
    app_priorities: list[int] | None = Field(None, description="hint priority per app (None: 0)")
    system_prompt_tokens: Dist = _dist(mean=4096, cv=0.5, min=512, max=16384)
    first_message_tokens: Dist = _dist(mean=512, cv=1.0, min=16, max=8192)
    tool_message_tokens: Dist = _dist(mean=768, cv=1.5, min=16, max=16384)
    output_tokens: Dist = _dist(mean=200, cv=1.0, min=1, max=4096)
    turns: Dist = _dist(mean=8, cv=0.75, min=1, max=50)
    tool_gap_ms: Dist = _dist(kind="lognormal", mean=1500, cv=1.5, min=0, max=60000)
    max_context_tokens: int = Field(131072, gt=0, description="no prompt exceeds this")
    subagent_prob: float = Field(0.1, ge=0, le=1, description="chance a (non-final) turn fans out to sub-agents")
    subagent_fanout: Dist = _dist(mean=2, cv=0.5, min=1, max=4)
    subagent_turns: Dist = _dist(mean=4, cv=0.75, min=1, max=20)
    max_subagent_depth: int = Field(1, ge=0, le=4, description="0: no sub-agents; 2: sub-agents may fan out once more")
    nominal_prefill_tokens_per_s: float = Field(10000.0, gt=0, allow_inf_nan=False,
                                                description="service model for sub-agent timing only")
    nominal_decode_ms_per_token: float = Field(20.0, gt=0, allow_inf_nan=False,
                                               description="service model for sub-agent timing only")
    hints: Literal["expected", "actual"] = Field("expected", description="osl/iat hints: configured means or "
                                                 "each row's true values")

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        given_n = self.num_sessions is not None and "num_sessions" in self.model_fields_set
        if self.duration_s is not None:
            if given_n:
                raise ValueError("give num_sessions or duration_s, not both")
            self.num_sessions = None
            if self.rate * self.duration_s > _MAX_EXPECTED_SESSIONS:
                raise ValueError(f"rate x duration_s = {self.rate * self.duration_s:g} expected sessions; "
                                 f"at most {_MAX_EXPECTED_SESSIONS:,}")
        elif self.num_sessions is None:
            raise ValueError("give num_sessions or duration_s")
        elif self.num_sessions > _MAX_EXPECTED_SESSIONS:
            raise ValueError(f"num_sessions must be <= {_MAX_EXPECTED_SESSIONS:,}")
        for name, values in (("app_weights", self.app_weights), ("app_priorities", self.app_priorities)):
            if values is not None and len(values) != self.n_apps:
                raise ValueError(f"{name} has {len(values)} entries; need one per app (n_apps={self.n_apps})")
        if self.app_weights is not None:
            if not all(math.isfinite(w) and w >= 0 for w in self.app_weights) or sum(self.app_weights) <= 0:
                raise ValueError(f"app_weights must be finite, >= 0 and not all 0, got {self.app_weights}")
        for name in _COUNT_DISTS:
            d: Dist = getattr(self, name)
            if d.max is not None and d.max < 1:
                raise ValueError(f"{name}.max must be >= 1 (it counts tokens or turns), got {d.max}")
        return self


class _Generator:
    """One generation run: the random stream, the id counter and the rows so far."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.next_id = 0
        self.rows: list[tuple[float, int, dict]] = []  # (nominal arrival ms, creation order, row)
        self.osl_hint = int(round(cfg.output_tokens.mean))
        self.iat_hint = int(round(cfg.tool_gap_ms.mean))

    def fresh(self, n: int) -> list[int]:
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return ids

    def count(self, dist: Dist) -> int:
        return max(1, dist.draw(self.rng))

    def service_ms(self, new_tokens: int, osl: int) -> float:
        c = self.cfg
        return 1000.0 * new_tokens / c.nominal_prefill_tokens_per_s + osl * c.nominal_decode_ms_per_token

    def session(self, sid: str, prefix_ids: list[int], prefix_len: int, start_ms: int, n_turns: int,
                depth: int, priority: int) -> tuple[float, int] | None:
        """Emit one session's rows (and its sub-agents'); (nominal completion ms, last output) or None if no room."""
        c, rng, B = self.cfg, self.rng, self.cfg.trace_block_size
        m = min(self.count(c.first_message_tokens), c.max_context_tokens - prefix_len)
        if m < 1:
            return None
        L = prefix_len + m
        ids = list(prefix_ids) + self.fresh(-(-L // B) - len(prefix_ids))
        turns: list[tuple[float, int | None, int, list[int], int]] = []  # (nominal t, delay, isl, ids, osl)
        t, delay, new_tokens = float(start_ms), None, m
        while True:
            osl = self.count(c.output_tokens)
            turns.append((t, delay, L, ids, osl))
            done = t + self.service_ms(new_tokens, osl)
            room = c.max_context_tokens - L - osl
            if len(turns) == n_turns or room < 1:
                break
            results = []
            if depth < c.max_subagent_depth and rng.random() < c.subagent_prob:
                for j in range(self.count(c.subagent_fanout)):
                    child_start = int(round(done + c.tool_gap_ms.draw(rng)))
                    res = self.session(f"{sid}.t{len(turns) - 1}.{j}", ids[:L // B], L, child_start,
                                       self.count(c.subagent_turns), depth + 1, priority)
                    if res is not None:
                        results.append(res)
            if results:
                m = sum(out for _, out in results)
                delay = max(0, int(round(max(end for end, _ in results) - done)))
            else:
                m = self.count(c.tool_message_tokens)
                delay = c.tool_gap_ms.draw(rng)
            m = min(m, room)
            new_tokens = osl + m
            L += new_tokens
            ids = ids + self.fresh(-(-L // B) - len(ids))
            t = done + delay

        n = len(turns)
        for k, (t_k, delay_k, isl, ids_k, osl) in enumerate(turns):
            row: dict = {"session_id": sid}
            if delay_k is None:
                row["timestamp"] = start_ms
            else:
                row["delay"] = delay_k
            row["input_length"] = isl
            row["output_length"] = osl
            row["hash_ids"] = ids_k
            if c.hints == "actual":
                osl_h = osl
                iat_h = turns[k + 1][1] if k + 1 < n else self.iat_hint
            else:
                osl_h, iat_h = self.osl_hint, self.iat_hint
            row["nvext"] = {"agent_hints": {"prefix_id": sid, "total_requests": n, "osl": osl_h,
                                            "iat": iat_h, "priority": priority}}
            self.rows.append((t_k, len(self.rows), row))
        return done, turns[-1][4]

    def arrivals_ms(self) -> list[int]:
        c, rng = self.cfg, self.rng
        if c.duration_s is None:
            times = np.cumsum(rng.exponential(1.0 / c.rate, size=c.num_sessions))
        else:
            out, t = [], 0.0
            while True:
                t += rng.exponential(1.0 / c.rate)
                if t >= c.duration_s:
                    break
                out.append(t)
            if not out:
                raise ValueError(f"no session arrived within duration_s={c.duration_s:g} at rate={c.rate:g}/s; "
                                 "raise rate or duration_s")
            times = np.asarray(out)
        return [int(round(1000.0 * x)) for x in times]

    def run(self) -> list[dict]:
        c, rng, B = self.cfg, self.rng, self.cfg.trace_block_size
        sys_len = [min(self.count(c.system_prompt_tokens), c.max_context_tokens - 1) for _ in range(c.n_apps)]
        sys_ids = [self.fresh(s // B) for s in sys_len]
        starts = self.arrivals_ms()
        w = np.ones(c.n_apps) if c.app_weights is None else np.asarray(c.app_weights, dtype=float)
        apps = rng.choice(c.n_apps, size=len(starts), p=w / w.sum())
        prios = c.app_priorities or [0] * c.n_apps
        width = max(5, len(str(len(starts) - 1)))
        for i, (start, a) in enumerate(zip(starts, apps.tolist())):
            self.session(f"app{a}-{i:0{width}d}", sys_ids[a], sys_len[a], start, self.count(c.turns), 0, prios[a])
        self.rows.sort(key=lambda r: (r[0], r[1]))
        return [row for _, _, row in self.rows]


def synth_agentic(cfg: SynthConfig) -> list[dict]:
    """Rows of a synthetic agentic trace, in file order (see the module docstring)."""
    if not isinstance(cfg, SynthConfig):
        raise TypeError(f"cfg must be a SynthConfig (validate a dict with SynthConfig(**d)), got {type(cfg).__name__}")
    return _Generator(cfg).run()


def write_jsonl(rows: list[dict], path) -> str:
    """Write rows one JSON object per line (deterministic bytes); returns the path."""
    spath = os.fspath(path)
    with open(spath, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row))
            fh.write("\n")
    return spath
