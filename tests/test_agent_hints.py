"""NAT agent hints (``nvext.agent_hints``), parsed once into ``AgentHints`` (dynosim/router/hints.py).

Everything about reading hints is pinned here: NAT's defaults, level names and
numeric buckets, priority, malformed values; and that the frontend parses them
once, when it makes the request, for both its priority and the router.
"""

from __future__ import annotations

import dataclasses

import pytest

from dynosim.router.hints import IAT_CUTS, OSL_CUTS, AgentHints, iat_level, osl_level


def extra(**ah) -> dict:
    return {"nvext": {"agent_hints": ah}}


def test_defaults_when_absent_or_malformed():
    for e in (None, {}, {"nvext": "junk"}, {"nvext": {"agent_hints": None}}, {"nvext": {}}, extra(),
              {"nvext": {"agent_hints": ["prefix_id", "p"]}}):
        assert AgentHints.parse(e, 5) == AgentHints("auto-5", 1, "MEDIUM", "MEDIUM", 0), e
    # each field on its own
    assert AgentHints.parse(extra(prefix_id="", total_requests="x", osl="bogus", iat=[1], priority="3"), 9) == \
        AgentHints("auto-9", 1, "MEDIUM", "MEDIUM", 0)
    assert AgentHints.parse(extra(prefix_id=None, total_requests=None, osl=None, iat=None, priority=None), 2) == \
        AgentHints("auto-2", 1, "MEDIUM", "MEDIUM", 0)
    assert AgentHints.parse({}, 1).prefix_id != AgentHints.parse({}, 2).prefix_id   # unique: no stickiness


def test_all_fields_given():
    h = AgentHints.parse(extra(prefix_id="run1-d0", total_requests=12, osl=2048, iat="LOW", priority=3), 7)
    assert h == AgentHints("run1-d0", 12, "HIGH", "LOW", 3)
    assert AgentHints.parse(extra(prefix_id=7), 0).prefix_id == "7"          # any value, as a string


def test_level_names_any_case():
    assert [osl_level(v) for v in ("low", " High ", "MEDIUM")] == ["LOW", "HIGH", "MEDIUM"]
    assert [iat_level(v) for v in ("LOW", " medium ", "high")] == ["LOW", "MEDIUM", "HIGH"]


def test_numeric_values_fall_in_level_buckets():
    assert OSL_CUTS == (256, 1024) and IAT_CUTS == (100, 500)
    assert [osl_level(v) for v in (0, 255, 256, 1023, 1024, 5000, "300", 255.9, -4)] == \
        ["LOW", "LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH", "MEDIUM", "LOW", "LOW"]
    assert [iat_level(v) for v in (50, 99, 100, 499, 500, "750", 150.5)] == \
        ["LOW", "LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH", "MEDIUM"]
    for bad in (None, "bogus", True, False, [], {}, float("nan"), float("inf"), "inf"):
        assert osl_level(bad) == "MEDIUM" and iat_level(bad) == "MEDIUM", bad


def test_total_requests_numbers_and_numeric_strings_truncate():
    got = [AgentHints.parse(extra(total_requests=v), 0).total_requests for v in (5, "5", 3.7, " 4 ", 0, -2)]
    assert got == [5, 5, 3, 4, 0, -2]
    for bad in (True, "x", float("nan"), [3]):
        assert AgentHints.parse(extra(total_requests=bad), 0).total_requests == 1, bad


def test_priority_is_an_int_or_zero():
    """As the frontend has always read it: an ``int`` (not a bool); a numeric string or a float is 0."""
    got = [AgentHints.parse(extra(priority=v), 0).priority for v in (3, 0, -1, "3", 2.0, True, None)]
    assert got == [3, 0, -1, 0, 0, 0, 0]


def test_frozen():
    h = AgentHints.parse(extra(prefix_id="p"), 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.prefix_id = "q"


def test_the_frontend_parses_once_for_priority_and_router(tmp_path, monkeypatch):
    """Every request a frontend makes carries its parsed hints (``req.agent``, also on a disaggregated
    twin); the request priority is the row's ``priority`` or else the hint's; parsing happens once per row."""
    import json

    import dynosim
    from dynosim.router import hints as hints_mod

    rows = [{"timestamp": 0, "input_length": 64, "output_length": 4, "hash_ids": [1],
             "nvext": {"agent_hints": {"prefix_id": "s", "total_requests": 3, "osl": 10, "iat": 900, "priority": 2}}},
            {"timestamp": 5, "input_length": 64, "output_length": 4, "hash_ids": [2], "priority": 5,
             "nvext": {"agent_hints": {"priority": 1}}},
            {"timestamp": 9, "input_length": 64, "output_length": 4, "hash_ids": [3]}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []
    real = hints_mod.AgentHints.parse.__func__

    def counting(cls, e, rid):
        calls.append(rid)
        return real(cls, e, rid)
    monkeypatch.setattr(hints_mod.AgentHints, "parse", classmethod(counting))
    want = [AgentHints("s", 3, "LOW", "HIGH", 2), AgentHints("auto-1", 1, "MEDIUM", "MEDIUM", 1),
            AgentHints("auto-2", 1, "MEDIUM", "MEDIUM", 0)]
    for disagg in (None, {"prefill_workers": 1, "decode_workers": 1}):
        calls.clear()
        cfg = dynosim.RunConfig(workers=2, disagg=disagg, router_mode="thompson", trace_block_size=64)
        res = dynosim.run(path, config=cfg, timeline_points=0)
        reqs = sorted(res.extra["state"].requests, key=lambda r: r.rid)
        assert sorted(calls) == [0, 1, 2], disagg       # once per request: not by the policies, not for a twin
        assert [r.agent for r in reqs] == want
        assert [r.priority for r in reqs] == [2, 5, 0]
        assert (res.requests["status"] == "done").all()
