"""Synthetic agentic traces: determinism, prefix-chain structure, hints, loader acceptance, config errors."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import pytest
from pydantic import ValidationError

from dynosim.traces import inspect_trace, load_trace
from dynosim.traces.synth import Dist, SynthConfig, synth_agentic, write_jsonl

B = 512


@pytest.fixture(scope="module")
def default_rows() -> list[dict]:
    return synth_agentic(SynthConfig())


@pytest.fixture(scope="module")
def default_path(tmp_path_factory, default_rows):
    return write_jsonl(default_rows, tmp_path_factory.mktemp("synth") / "default.jsonl")


def by_session(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        out[r["session_id"]].append(r)
    return out


def top_level(sid: str) -> bool:
    return ".t" not in sid


def app_of(sid: str) -> str:
    return sid.split("-", 1)[0]


def parent_of(sid: str) -> tuple[str, int]:
    """Sub-agent id '<parent>.t<turn>.<j>' -> (parent session id, parent turn index)."""
    head, turn, _ = sid.rsplit(".", 2)
    return head, int(turn[1:])


# ---------------------------------------------------------------------------
# determinism


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path):
    a = write_jsonl(synth_agentic(SynthConfig(seed=7)), tmp_path / "a.jsonl")
    b = write_jsonl(synth_agentic(SynthConfig(seed=7)), tmp_path / "b.jsonl")
    c = write_jsonl(synth_agentic(SynthConfig(seed=8)), tmp_path / "c.jsonl")
    assert open(a, "rb").read() == open(b, "rb").read()
    assert open(a, "rb").read() != open(c, "rb").read()


# ---------------------------------------------------------------------------
# structure


def test_block_counts_and_mooncake_chaining(default_rows):
    """len(hash_ids) == ceil(isl/512); every id sits at one position after one predecessor."""
    where: dict[int, tuple[int, int | None]] = {}
    for r in default_rows:
        ids = r["hash_ids"]
        assert len(ids) == math.ceil(r["input_length"] / B)
        assert all(type(h) is int and h >= 0 for h in ids)
        for pos, h in enumerate(ids):
            key = (pos, ids[pos - 1] if pos else None)
            assert where.setdefault(h, key) == key, f"id {h} at two places"


def test_turns_extend_previous_prompt(default_rows):
    """Turn k+1 = turn k's prompt + its output + a message: ids and lengths grow as a prefix chain."""
    for sid, turns in by_session(default_rows).items():
        for prev, cur in zip(turns, turns[1:]):
            assert cur["hash_ids"][:len(prev["hash_ids"])] == prev["hash_ids"]
            assert cur["input_length"] > prev["input_length"] + prev["output_length"]
            assert len(cur["hash_ids"]) == math.ceil(cur["input_length"] / B)


def test_system_prompt_shared_within_app_not_across(default_rows):
    firsts = {sid: turns[0] for sid, turns in by_session(default_rows).items() if top_level(sid)}
    per_app: dict[str, list[list[int]]] = defaultdict(list)
    for sid, r in firsts.items():
        per_app[app_of(sid)].append(r["hash_ids"])
    assert len(per_app) == 4 and all(len(v) >= 5 for v in per_app.values())
    shared_first_ids = set()
    for app, id_lists in per_app.items():
        common = id_lists[0]
        for ids in id_lists[1:]:
            n = next((i for i, (x, y) in enumerate(zip(common, ids)) if x != y), min(len(common), len(ids)))
            common = common[:n]
        assert len(common) >= 1, app                      # min system prompt is one full block
        # everything after the system prompt is private to the session
        tails = [ids[len(common)] for ids in id_lists if len(ids) > len(common)]
        assert len(tails) == len(set(tails))
        shared_first_ids.add(common[0])
    assert len(shared_first_ids) == 4                     # apps share nothing


def test_subagents_share_parent_prefix_then_diverge(default_rows):
    sessions = by_session(default_rows)
    subs = [sid for sid in sessions if not top_level(sid)]
    assert len(subs) >= 20
    for sid in subs:
        parent, k = parent_of(sid)
        fork = sessions[parent][k]
        full = fork["input_length"] // B
        child = sessions[sid][0]
        assert child["hash_ids"][:full] == fork["hash_ids"][:full]
        assert child["input_length"] > fork["input_length"]
        if full < len(child["hash_ids"]):                # the block at the fork point is the child's own
            assert child["hash_ids"][full] not in set(fork["hash_ids"])
        assert k < len(sessions[parent]) - 1              # the parent continues after its sub-agents
        assert child["timestamp"] >= sessions[parent][0]["timestamp"]
        assert child["nvext"]["agent_hints"]["priority"] == fork["nvext"]["agent_hints"]["priority"]


def test_subagent_depth_and_switch_off():
    none = synth_agentic(SynthConfig(subagent_prob=0.0, num_sessions=30))
    assert all(top_level(r["session_id"]) for r in none)
    deep = synth_agentic(SynthConfig(subagent_prob=0.5, max_subagent_depth=2, num_sessions=30))
    depths = {r["session_id"].count(".t") for r in deep}
    assert depths == {0, 1, 2}


def test_context_limit_respected():
    rows = synth_agentic(SynthConfig(max_context_tokens=20000, num_sessions=50, seed=3))
    assert max(r["input_length"] for r in rows) <= 20000
    assert max(r["input_length"] for r in rows) > 15000      # sessions do run into it


def test_row_fields_and_file_order(default_rows):
    seen: set[str] = set()
    last_ts = -1
    for r in default_rows:
        first = r["session_id"] not in seen
        seen.add(r["session_id"])
        assert ("timestamp" in r) == first and ("delay" in r) == (not first)
        if first:
            assert type(r["timestamp"]) is int and r["timestamp"] >= last_ts
            last_ts = r["timestamp"]
        else:
            assert type(r["delay"]) is int and r["delay"] >= 0
        assert r["output_length"] >= 1 and r["input_length"] >= 1


# ---------------------------------------------------------------------------
# hints


def test_hints_consistent(default_rows):
    cfg = SynthConfig()
    for sid, turns in by_session(default_rows).items():
        for r in turns:
            h = r["nvext"]["agent_hints"]
            assert set(h) == {"prefix_id", "total_requests", "osl", "iat", "priority"}
            assert h["prefix_id"] == sid and h["total_requests"] == len(turns)
            assert all(type(h[k]) is int for k in ("total_requests", "osl", "iat", "priority"))
            assert h["osl"] == round(cfg.output_tokens.mean) and h["iat"] == round(cfg.tool_gap_ms.mean)
            assert h["priority"] == 0


def test_actual_hints_and_app_priorities():
    rows = synth_agentic(SynthConfig(hints="actual", num_sessions=40, app_priorities=[0, 1, 2, 3]))
    for sid, turns in by_session(rows).items():
        for k, r in enumerate(turns):
            h = r["nvext"]["agent_hints"]
            assert h["osl"] == r["output_length"]
            if k + 1 < len(turns):
                assert h["iat"] == turns[k + 1]["delay"]
            assert h["priority"] == int(app_of(sid)[3:])


# ---------------------------------------------------------------------------
# loader and inspection


def test_loader_accepts_and_inspect_reuse_high(default_path, default_rows):
    sessions = by_session(default_rows)
    tr = load_trace(default_path)
    assert tr.n_requests == len(default_rows) and tr.n_sessions == len(sessions)
    assert sum(top_level(s.session_id) for s in tr.sessions) == 100
    for s in tr.sessions:
        rows = sessions[s.session_id]
        assert len(s.turns) == len(rows)
        assert [t.delay_ms for t in s.turns[1:]] == [float(r["delay"]) for r in rows[1:]]
        assert s.turns[0].row.extra["nvext"]["agent_hints"]["total_requests"] == len(rows)
    d = inspect_trace(default_path)
    assert d["n_sessions"] == len(sessions)
    assert d["reuse_bound_tokens"] > 0.8 and d["reuse_bound_blocks"] > 0.8
    assert d["osl"]["mean"] == pytest.approx(200, rel=0.25)


def test_duration_mode(tmp_path):
    cfg = SynthConfig(duration_s=60, rate=2.0, seed=1)
    rows = synth_agentic(cfg)
    tops = {r["session_id"]: r["timestamp"] for r in rows if top_level(r["session_id"]) and "timestamp" in r}
    assert 60 < len(tops) < 190 and max(tops.values()) < 60_000
    tr = load_trace(write_jsonl(rows, tmp_path / "d.jsonl"))
    assert tr.n_requests == len(rows)


def test_gamma_gaps_and_other_block_size(tmp_path):
    cfg = SynthConfig(num_sessions=20, trace_block_size=64, subagent_prob=0.3,
                      tool_gap_ms=Dist(kind="gamma", mean=800, cv=0.5, min=0, max=5000))
    rows = synth_agentic(cfg)
    assert all(len(r["hash_ids"]) == math.ceil(r["input_length"] / 64) for r in rows)
    delays = [r["delay"] for r in rows if "delay" in r]
    assert delays and max(delays) > 0
    tr = load_trace(write_jsonl(rows, tmp_path / "g.jsonl"), trace_block_size=64)
    assert tr.n_requests == len(rows)
    line = json.loads(open(tmp_path / "g.jsonl").readline())
    assert line == rows[0]


# ---------------------------------------------------------------------------
# config validation


@pytest.mark.parametrize("kwargs, fragment", [
    ({"num_sessions": 10, "duration_s": 5}, "not both"),
    ({"num_sessions": None}, "give num_sessions or duration_s"),
    ({"rate": 0}, "greater than 0"),
    ({"rate": float("inf")}, "finite"),
    ({"n_apps": 2, "app_weights": [1.0]}, "one per app"),
    ({"n_apps": 2, "app_weights": [0.0, 0.0]}, "not all 0"),
    ({"n_apps": 2, "app_priorities": [1, 2, 3]}, "one per app"),
    ({"subagent_prob": 1.5}, "less than or equal to 1"),
    ({"output_tokens": {"mean": 100, "min": 10, "max": 5}}, "max (5) must be >= min (10)"),
    ({"output_tokens": {"mean": 100, "max": 0}}, "output_tokens.max must be >= 1"),
    ({"tool_gap_ms": {"mean": 100, "kind": "pareto"}}, "lognormal"),
    ({"turns": {"mean": -1}}, "greater than 0"),
    ({"bogus": 1}, "Extra inputs"),
])
def test_config_errors(kwargs, fragment):
    with pytest.raises(ValidationError) as info:
        SynthConfig(**kwargs)
    assert fragment in str(info.value), str(info.value)


def test_no_arrivals_and_wrong_type():
    with pytest.raises(ValueError, match="no session arrived"):
        synth_agentic(SynthConfig(duration_s=0.001, rate=0.001))
    with pytest.raises(TypeError, match="SynthConfig"):
        synth_agentic({"seed": 1})
