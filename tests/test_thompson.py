"""NAT's Thompson-sampling router as a dynosim policy (dynosim/router/policies/thompson.py)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from dynosim.request import Request, RequestStatus
from dynosim.router.active_load import ActiveLoad
from dynosim.router.context import RoutingContext
from dynosim.router.hints import AgentHints
from dynosim.router.policies.thompson import PARAM_DEFAULTS, ThompsonPolicy, resolve_params
from dynosim.router.router import Router

BS = 16


def hreq(rid, *, prefix=None, total=None, osl=None, iat=None, isl=256, hashes=None, true_osl=50, **extra):
    ah = {k: v for k, v in (("prefix_id", prefix), ("total_requests", total), ("osl", osl), ("iat", iat))
          if v is not None}
    ah.update(extra)
    hints = {"nvext": {"agent_hints": ah}} if ah else {}
    seq = list(hashes) if hashes is not None else [rid * 1000 + j for j in range(isl // BS)]
    return Request(rid, isl, true_osl, (), seq, 0.0, hints=hints)


def mkctx(n=4, now=0.0, overlap=None, metrics=None, workers=None):
    fn = (lambda r: list(overlap)) if overlap is not None else None
    return RoutingContext(list(range(n)) if workers is None else list(workers), ActiveLoad(n), now, BS,
                          random.Random(0), fn, (), metrics)


def route(policy, req, ctx):
    w = policy.select(req, ctx)
    req.worker, req.routed = w, ctx.now
    return w


def finish(policy, req, now, tokens=50, failure=None):
    req.generated = tokens
    if failure is None:
        req.status = RequestStatus.DONE
    else:
        req.fail(failure)
    policy.on_complete(req, now)


def quiet(**params):
    """No sampling noise in the score: LinTS v = 0 (θ = μ = 0 before any feedback), no Beta term."""
    return {"lints.v": 0.0, "exploration.base_ts_weight": 0.0, **params}


# -- hints ------------------------------------------------------------------------------------------

def test_policy_reads_the_parsed_hints_and_parses_a_hand_built_request_itself():
    """A frontend's request carries its hints parsed (``req.agent``): the policy reads them, not ``req.hints``.
    A request built by hand (``agent`` None) has its ``req.hints`` parsed by the same ``AgentHints.parse``.
    (Hint parsing itself is pinned in tests/test_agent_hints.py.)"""
    pol = ThompsonPolicy(record=True)
    parsed = hreq(0, prefix="raw", osl="LOW", iat="HIGH")
    parsed.agent = AgentHints("parsed", 3, "HIGH", "LOW", 0)
    route(pol, parsed, mkctx())
    route(pol, hreq(1, prefix="raw", total=5, osl="LOW", iat="HIGH"), mkctx())
    route(pol, hreq(2), mkctx())
    d = pol.decisions_log
    assert [(x["prefix_id"], x["reuse_budget"], x["osl"], x["iat"]) for x in d] == \
        [("parsed", 2, "HIGH", "LOW"), ("raw", 4, "LOW", "HIGH"), ("auto-2", 0, "MEDIUM", "MEDIUM")]


def test_router_reads_the_osl_hint_not_the_true_output_length():
    pol = ThompsonPolicy(record=True)
    route(pol, hreq(0, osl="LOW", true_osl=4000), mkctx())
    route(pol, hreq(1, true_osl=4000), mkctx())
    assert [d["osl"] for d in pol.decisions_log] == ["LOW", "MEDIUM"]
    assert pol.decisions_log[0]["x"][0][5] == pytest.approx(1 / 3)


# -- reuse budget and prefix state ------------------------------------------------------------------

def test_reuse_budget_counts_down_and_drops_state():
    pol = ThompsonPolicy()
    assert [pol.consume_reuse_budget("s", 3) for _ in range(3)] == [2, 1, 0]
    assert "s" not in pol.budgets
    assert pol.consume_reuse_budget("s", 3) == 2  # a fresh count after the drop
    assert pol.consume_reuse_budget("t", 2) == 1
    assert pol.consume_reuse_budget("t", 5) == 3  # total = max(total, hint)
    assert pol.consume_reuse_budget("t", 1) == 2  # a smaller hint does not shrink it
    assert pol.consume_reuse_budget("u", 1) == 0 and "u" not in pol.budgets


def test_router_prefix_state_follows_the_budget():
    pol = ThompsonPolicy(record=True)
    ctx = mkctx()
    ws = []
    for i in range(3):
        ws.append(route(pol, hreq(i, prefix="s", total=3, iat="LOW"), ctx))
        if i < 2:
            w, reuse, _ = pol.prefix_state["s"]
            assert (w, reuse) == (ws[-1], 2 - i)
            assert pol.outstanding_work(w) == pytest.approx((2 - i) * (2.0 + 256 / 1024) * 1.5)
    assert "s" not in pol.prefix_state and "s" not in pol.budgets
    assert all(pol.outstanding_work(w) == 0.0 for w in range(4))
    assert [d["reuse_budget"] for d in pol.decisions_log] == [2, 1, 0]
    assert [d["last"] for d in pol.decisions_log] == [None, ws[0], ws[1]]
    # requests without hints never leave state behind
    for i in range(3, 10):
        route(pol, hreq(i), ctx)
    assert not pol.prefix_state and not pol.budgets


# -- temperature, switch penalty, affinity, load modifier --------------------------------------------

def test_temperature_formula():
    pol = ThompsonPolicy()
    assert pol.temperature(0, 1.0) == 1.0
    assert pol.temperature(1, 1.0) == pytest.approx(0.5)
    assert pol.temperature(2, 0.6) == pytest.approx(1 / 2.2)
    assert pol.temperature(10, 1.5) == 0.15  # clipped at temp_min
    hot = ThompsonPolicy(params={"exploration.temperature.base": 5.0})
    assert hot.temperature(0, 1.0) == 2.0  # clipped at temp_max
    assert hot.temperature(3, 1.0) == pytest.approx(1.25)


def _expected_load_mod(pol, d, i, job):
    pen = (pol.w_gpu * d["gpu"][i] + pol.w_queue * d["queue"][i] + pol.w_out * d["outstanding"][i]
           + pol.w_jg * job * d["gpu"][i] + pol.w_jq * job * d["queue"][i])
    return 1.0 / (1.0 + max(0.0, pen))


@pytest.mark.parametrize("preset", ["tuned", "original"])
def test_switch_penalty_affinity_bonus_and_load_modifier_exact(preset):
    pol = ThompsonPolicy(preset=preset, params=quiet(), record=True)
    ov = [0, 4, 8, 16]  # blocks cached per worker, of the 16-block prompt
    ctx = mkctx(overlap=ov)
    first = route(pol, hreq(0, prefix="s", total=5), ctx)
    d0 = pol.decisions_log[0]
    assert d0["scores"] == [0.0] * 4 and d0["probs"] == pytest.approx([0.25] * 4)  # no last worker yet
    route(pol, hreq(1, prefix="s", total=5), mkctx(overlap=ov))
    d = pol.decisions_log[1]
    R, f = 3, 1.0
    assert (d["reuse_budget"], d["last"]) == (R, first)
    penalty = pol.sw_base + pol.sw_reuse * R + pol.sw_iat * f
    bonus_w = pol.aff_base + pol.aff_reuse * R + pol.aff_iat * f
    assert penalty == pytest.approx({"tuned": 0.25, "original": 0.49}[preset])
    for i in range(4):
        o = ov[i] / 16
        assert d["overlap"][i] == pytest.approx(o)
        assert d["prefill_cost"][i] == pytest.approx(256 * (1 - o) / 1024)
        lm = _expected_load_mod(pol, d, i, 2.0 + d["prefill_cost"][i])
        if i == first:
            lm = max(lm, pol.sticky_floor)
            assert d["scores"][i] == pytest.approx(bonus_w * (0.5 + 0.5 * o) * lm)
        else:
            assert d["scores"][i] == pytest.approx(-penalty * lm)
        assert d["load_mod"][i] == pytest.approx(lm)
    # the optimized variant without a metrics source: gpu = min(1, pending/20), queue = pending
    assert d["queue"][first] == 1 and d["gpu"][first] == pytest.approx(0.05)
    assert d["outstanding"][first] == pytest.approx(4 * (2.0 + d0["prefill_cost"][first]))
    T = pol.temperature(R, f)
    e = np.exp((np.array(d["scores"]) - max(d["scores"])) / T)
    assert d["probs"] == pytest.approx((e / e.sum()).tolist())
    assert d["temperature"] == pytest.approx(0.25)


def test_sticky_load_floor_applies_only_to_the_sticky_worker():
    heavy = lambda w: (0.9, 20)  # noqa: E731  every worker is loaded
    pol = ThompsonPolicy(params=quiet(**{"affinity.sticky_load_floor": 0.7}), record=True)
    first = route(pol, hreq(0, prefix="s", total=4), mkctx(metrics=heavy))
    route(pol, hreq(1, prefix="s", total=4), mkctx(metrics=heavy))
    lm = pol.decisions_log[1]["load_mod"]
    assert lm[first] == 0.7
    assert all(v < 0.05 for i, v in enumerate(lm) if i != first)
    # at R = 0 no floor, no bonus, no penalty (the last request of the session)
    pol2 = ThompsonPolicy(params=quiet(**{"affinity.sticky_load_floor": 0.7}), record=True)
    route(pol2, hreq(0, prefix="s", total=2), mkctx(metrics=heavy))
    route(pol2, hreq(1, prefix="s", total=2), mkctx(metrics=heavy))
    d = pol2.decisions_log[1]
    assert d["reuse_budget"] == 0 and max(d["load_mod"]) < 0.05 and d["scores"] == [0.0] * 4


def test_stickiness_long_session_keeps_its_worker():
    """A session with many expected requests (frequent arrivals) stays on its worker, with other
    traffic in between, through the real Router and delayed feedback (seeded: deterministic)."""
    for preset in ("tuned", "original"):
        pol = ThompsonPolicy(seed=11, preset=preset)
        router = Router("thompson", 4, BS, seed=11, policy=pol)
        now, rid, chosen = 0.0, 0, []
        for turn in range(40):
            batch = [hreq(rid, prefix="agent-run", total=60, osl=300, iat=40)]
            batch += [hreq(rid + 1 + k, isl=512) for k in range(3)]  # one-off requests, R = 0
            rid += len(batch)
            for r in batch:
                w = router.route(r, now)
                assert w is not None
                if r.hints:
                    chosen.append(w)
            now += 50.0
            for r in batch:
                r.generated, r.status = 30, "done"
                router.on_first_token(r, now)
                router.on_complete(r, now + 10.0)
            now += 20.0
        assert pol.stats["sticky"] + pol.stats["switch"] == 39
        assert pol.stats["feedback"] == rid and not pol.pending
        if preset == "original":  # sticky_load_floor 0.70: never leaves
            assert chosen == [chosen[0]] * len(chosen)
        else:  # floor 0.01: the session's own outstanding work scales its score down, rare migrations
            assert pol.stats["switch"] <= 2, pol.stats


def test_short_session_without_budget_is_not_sticky():
    """total_requests = 1 (the default): every request has R = 0, so routing stays random."""
    pol = ThompsonPolicy(seed=2)
    ws = [route(pol, hreq(i, prefix="same"), mkctx()) for i in range(200)]
    assert set(ws) == {0, 1, 2, 3}
    assert pol.stats["sticky"] == pol.stats["switch"] == 0


def _share_of_worker0(metrics, seed=5, n=800):
    pol = ThompsonPolicy(seed=seed, params={"lints.v": 0.0, "exploration.base_ts_weight": 1.0},
                         metrics_interval_ms=0.0)
    hits = 0
    for i in range(n):
        ctx = mkctx(now=float(i), metrics=metrics)
        r = hreq(i)
        hits += route(pol, r, ctx) == 0
        finish(pol, r, i + 0.5)
    return hits / n


def test_load_modifier_reduces_a_loaded_workers_share():
    idle = lambda w: (0.0, 0)  # noqa: E731
    loaded = lambda w: (0.95, 8) if w == 0 else (0.05, 0)  # noqa: E731
    base = _share_of_worker0(idle)
    hot = _share_of_worker0(loaded)
    assert 0.2 < base < 0.3
    assert hot < 0.2 and hot < base - 0.06


# -- reward and baselines ---------------------------------------------------------------------------

def test_reward_is_half_at_the_baseline():
    assert ThompsonPolicy.reward(5.0, 5.0) == 0.5
    assert ThompsonPolicy.reward(15.0, 5.0) == pytest.approx(0.25)
    assert ThompsonPolicy.reward(5.0, 5.0, success=False) == 0.0
    assert ThompsonPolicy.reward(1.0, 0.0) == pytest.approx(1 / 1001)  # baseline floored at 1e-3
    pol = ThompsonPolicy(record=True)
    r = hreq(0)
    route(pol, r, mkctx(now=100.0))
    finish(pol, r, 1100.0, tokens=50)  # 1000 ms / 50 tokens = 20 ms/token, no baseline yet -> max(1, m)
    fb = pol.feedback_log[-1]
    assert (fb["metric"], fb["per_tok"], fb["baseline_used"], fb["reward"]) == (20.0, True, 20.0, 0.5)


def test_ema_baselines_hierarchy_and_model_updates():
    pol = ThompsonPolicy(record=True)
    ctx0 = lambda now: mkctx(now=now, workers=[0])  # noqa: E731  only worker 0 is a candidate
    a = hreq(0, osl="LOW")
    route(pol, a, ctx0(0.0))
    x = np.array(pol.pending[0].x)
    finish(pol, a, 1000.0, tokens=50)  # m = 20
    key_b = (0, "LOW", "MEDIUM", True)  # 256 uncached tokens / 1024 -> prefill bin MEDIUM
    assert pol.ema_bucket == {key_b: 20.0} and pol.ema_worker == {(0, True): 20.0}
    assert pol.ema_global == {True: 20.0}
    # LinTS and Beta updates with r = 0.5 from the prior: A = λI + xxᵀ, b = r·x
    assert np.allclose(pol.bandits.A[0], np.eye(9) + np.outer(x, x))
    assert np.allclose(pol.bandits.b[0], 0.5 * x)
    assert pol.bandits.beta[0] == [1.5, 1.5]

    b = hreq(1, osl="LOW")
    route(pol, b, ctx0(2000.0))
    finish(pol, b, 4000.0, tokens=50)  # m = 40 against the bucket's 20
    fb = pol.feedback_log[-1]
    assert fb["baseline_used"] == 20.0 and fb["reward"] == pytest.approx(1 / 3)
    assert pol.ema_bucket[key_b] == pytest.approx(0.2 * 40 + 0.8 * 20)
    assert pol.ema_worker[(0, True)] == pytest.approx(24.0) and pol.ema_global[True] == pytest.approx(24.0)

    c = hreq(2, osl="HIGH")  # a new bucket on worker 0 -> worker EMA
    route(pol, c, ctx0(5000.0))
    finish(pol, c, 5500.0, tokens=50)
    assert pol.feedback_log[-1]["baseline_used"] == pytest.approx(24.0)

    d = hreq(3)  # a new worker -> global EMA
    route(pol, d, mkctx(now=6000.0, workers=[2]))
    finish(pol, d, 6600.0, tokens=50)
    g_after_c = 0.2 * 10 + 0.8 * 24.0  # c: 500 ms / 50 tokens
    assert pol.feedback_log[-1]["baseline_used"] == pytest.approx(g_after_c)
    assert pol.ema_worker[(2, True)] == 12.0

    e = hreq(4)  # failure: reward 0, baselines untouched
    route(pol, e, mkctx(now=7000.0, workers=[2]))
    snapshot = (dict(pol.ema_bucket), dict(pol.ema_worker), dict(pol.ema_global))
    alpha, beta = pol.bandits.beta[2]
    finish(pol, e, 9000.0, tokens=3, failure="preempted too often")
    assert pol.feedback_log[-1]["reward"] == 0.0 and not pol.feedback_log[-1]["success"]
    assert (pol.ema_bucket, pol.ema_worker, pol.ema_global) == snapshot
    assert pol.bandits.beta[2] == [alpha, beta + 1.0]

    f = hreq(5)  # no output tokens: raw ms with a separate baseline
    route(pol, f, mkctx(now=10000.0, workers=[2]))
    finish(pol, f, 10300.0, tokens=0)
    fb = pol.feedback_log[-1]
    assert (fb["per_tok"], fb["metric"], fb["baseline_used"], fb["reward"]) == (False, 300.0, 300.0, 0.5)
    assert pol.ema_global[False] == 300.0 and pol.ema_global[True] == pytest.approx(0.8 * g_after_c + 0.2 * 12)


# -- timeouts -----------------------------------------------------------------------------------------

def test_pending_decisions_expire_on_the_sweep():
    pol = ThompsonPolicy(record=True)
    ctx = lambda now: mkctx(now=now, workers=[1])  # noqa: E731
    lost = hreq(0)
    route(pol, lost, ctx(0.0))  # sweeps at t = 0
    route(pol, hreq(1), ctx(119_000.0))  # sweeps: nothing is 120 s old yet
    assert 0 in pol.pending and pol.stats["timeouts"] == 0
    route(pol, hreq(2), ctx(121_000.0))  # old enough, but only 2 s since the last sweep
    assert 0 in pol.pending
    route(pol, hreq(3), ctx(124_000.0))  # 5 s after the last sweep: expires
    assert 0 not in pol.pending and pol.stats["timeouts"] == 1
    assert pol.feedback_log[-1]["kind"] == "timeout"
    assert pol.bandits.beta[1] == [1.0, 2.0]  # timeout_reward 0
    assert set(pol.pending) == {1, 2, 3} and pol._pending_on[1] == 3
    state = (pol.bandits.beta[1][:], pol.bandits.A[1].copy())
    finish(pol, lost, 130_000.0)  # late feedback: unknown decision, ignored
    assert pol.stats["unknown_feedback"] == 1 and pol.stats["feedback"] == 0
    assert pol.bandits.beta[1] == state[0] and np.array_equal(pol.bandits.A[1], state[1])


def test_timeout_reward_parameter():
    pol = ThompsonPolicy(params={"feedback.timeout_reward": 0.25, "feedback.timeout_seconds": 1.0,
                                 "feedback.sweep_interval_seconds": 0.0})
    route(pol, hreq(0), mkctx(now=0.0, workers=[0]))
    route(pol, hreq(1), mkctx(now=1000.0, workers=[3]))
    assert pol.bandits.beta[0] == [1.25, 1.75] and list(pol.pending) == [1]


# -- determinism, parameters, quirks, numerics ----------------------------------------------------------

def _choices(seed, n=150):
    pol = ThompsonPolicy(seed=seed)
    out = []
    for i in range(n):
        r = hreq(i, prefix=f"s{i % 5}", total=30, iat=("LOW", "HIGH")[i % 2], isl=64 * (1 + i % 7))
        out.append(route(pol, r, mkctx(now=10.0 * i, overlap=[i % 3, 0, 1, 2])))
        if i % 3 == 0:
            finish(pol, r, 10.0 * i + 5.0, tokens=1 + i % 40)
    return out


def test_same_seed_same_choices():
    assert _choices(3) == _choices(3)
    assert _choices(3) != _choices(4)


def test_params_presets_overrides_and_errors():
    tuned = ThompsonPolicy().params
    orig = ThompsonPolicy(preset="original").params
    assert tuned == {k: v[1] for k, v in PARAM_DEFAULTS.items()}
    assert orig == {k: v[0] for k, v in PARAM_DEFAULTS.items()}
    assert (tuned["affinity.sticky_load_floor"], orig["affinity.sticky_load_floor"]) == (0.01, 0.70)
    assert (tuned["load_balancing.queue_penalty_weight"], orig["load_balancing.queue_penalty_weight"]) == (1.5, 0.5)
    pol = ThompsonPolicy(params={"affinity.sticky_load_floor": 0.5, "lints.v": "0.4"})
    assert pol.sticky_floor == 0.5 and pol.v == 0.4
    nested = ThompsonPolicy(params={"exploration": {"temperature": {"min": 0.3}}, "debug": {"traces_enabled": True},
                                    "infrastructure": {"block_size": 64, "router_type": "kv_load"}})
    assert nested.temp_min == 0.3 and nested.router_type == "kv_load"
    with pytest.raises(ValueError) as err:
        ThompsonPolicy(params={"affinity.bse": 1.0, "lints.vv": 2, "lints.v": 0.1})
    assert "affinity.bse" in str(err.value) and "lints.vv" in str(err.value)
    with pytest.raises(ValueError, match="affinity.bse"):
        resolve_params("tuned", {"affinity": {"bse": 1.0}})
    with pytest.raises(ValueError, match="finite number"):
        ThompsonPolicy(params={"affinity.base": "lots"})
    with pytest.raises(ValueError, match="router_type"):
        ThompsonPolicy(params={"infrastructure.router_type": "round_robin"})
    with pytest.raises(ValueError, match="temperature"):
        ThompsonPolicy(params={"exploration.temperature.min": 3.0})
    with pytest.raises(ValueError, match="preset"):
        ThompsonPolicy(preset="best")
    with pytest.raises(ValueError, match="variant"):
        ThompsonPolicy(variant="fancy")
    # router-level knobs of other policies pass through harmlessly (the Router forwards them)
    assert ThompsonPolicy(temperature=0.0, overlap_score_credit=1.0).temp_base == 1.0


def test_generalized_quirks_overlap_count_and_zero_load():
    metrics = lambda w: (0.8, 6)  # noqa: E731
    ov = [3, 0, 0, 0]
    req = lambda rid: hreq(rid, isl=64)  # noqa: E731  4 prompt blocks
    gen = ThompsonPolicy(variant="generalized", record=True)
    route(gen, req(0), mkctx(overlap=ov, metrics=metrics))
    d = gen.decisions_log[-1]
    assert [row[2] for row in d["x"]] == [3.0, 0.0, 0.0, 0.0]  # raw block count
    assert d["prefill_cost"][0] == 0.0  # clipped to 1 inside the prefill cost
    assert d["gpu"] == [0.0] * 4 and d["queue"] == [0.0] * 4
    assert [row[1] for row in d["x"]] == [1.0] * 4

    opt = ThompsonPolicy(variant="optimized", record=True)
    route(opt, req(0), mkctx(overlap=ov, metrics=metrics))
    d = opt.decisions_log[-1]
    assert [row[2] for row in d["x"]] == [0.75, 0.0, 0.0, 0.0]
    assert d["prefill_cost"][0] == pytest.approx(16 / 1024)
    assert d["gpu"] == [0.8] * 4 and d["queue"] == [6.0] * 4
    assert d["x"][0][1] == pytest.approx(1 / (1 + 0.8 + 1.5 * 6))

    mixed = ThompsonPolicy(variant="generalized", overlap_as_count=False, zero_load_metrics=False, record=True)
    route(mixed, req(0), mkctx(overlap=ov, metrics=metrics))
    d = mixed.decisions_log[-1]
    assert d["x"][0][2] == 0.75 and d["gpu"] == [0.8] * 4


def test_scraped_metrics_are_refreshed_once_per_interval():
    calls = []
    usage = {"v": 0.1}

    def metrics(w):
        calls.append(w)
        return usage["v"], 0

    pol = ThompsonPolicy(record=True)
    route(pol, hreq(0), mkctx(now=0.0, metrics=metrics))
    usage["v"] = 0.9
    route(pol, hreq(1), mkctx(now=500.0, metrics=metrics))
    assert len(calls) == 4 and pol.decisions_log[-1]["gpu"] == [0.1] * 4  # stale within 1 s
    route(pol, hreq(2), mkctx(now=1000.0, metrics=metrics))
    assert len(calls) == 8 and pol.decisions_log[-1]["gpu"] == [0.9] * 4
    # queue is at least this router's pending decisions on the worker
    assert max(pol.decisions_log[-1]["queue"]) >= 1


def test_post_decision_context_quirk():
    for flag in (True, False):
        pol = ThompsonPolicy(post_decision_context=flag, record=True)
        w = route(pol, hreq(0, prefix="s", total=5, iat="LOW"), mkctx())
        d = pol.decisions_log[-1]
        sel_x = d["x"][w]
        stored = pol.pending[0].x
        assert sel_x[4] == 0.0  # nothing pinned to any worker when it was chosen
        if flag:
            assert stored[4] == pytest.approx(math.tanh(0.1 * 4 * (2.0 + 0.25) * 1.5))
            assert np.allclose(np.delete(stored, 4), np.delete(sel_x, 4))
        else:
            assert np.array_equal(stored, sel_x)


def test_lints_sampling_falls_back_when_cholesky_fails():
    pol = ThompsonPolicy()
    for w in range(4):
        pol.bandits.ensure(w)
    pol.bandits.A[0] = -np.eye(9)  # not positive definite at any jitter: eigendecomposition fallback
    pol.bandits.A[1] = np.zeros((9, 9))  # singular: a small jitter fixes it
    pol.bandits.b[1] = np.ones(9)
    mu0, S0 = pol.bandits.posterior(0)
    mu1, S1 = pol.bandits.posterior(1)
    assert np.all(np.isfinite(mu0)) and np.all(np.isfinite(S0))
    assert np.allclose(S0 @ S0.T, np.eye(9) / 1e-10)  # eigenvalues floored at 1e-10
    assert np.all(np.isfinite(mu1)) and np.all(np.isfinite(S1))
    ws = [route(pol, hreq(i), mkctx()) for i in range(20)]
    assert all(w in range(4) for w in ws)
    # an ordinary posterior: S Sᵀ = A⁻¹ and μ = A⁻¹ b
    A = np.eye(9) * 2 + 0.1
    pol.bandits.A[2], pol.bandits.b[2] = A, np.arange(9.0)
    pol.bandits._factor.pop(2, None)
    mu, S = pol.bandits.posterior(2)
    assert np.allclose(S @ S.T, np.linalg.inv(A), atol=1e-6) and np.allclose(mu, np.linalg.solve(A, np.arange(9.0)))


def test_kv_load_router_type_picks_the_least_used_kv_cache():
    usage = [0.5, 0.2, 0.9, 0.2]
    pol = ThompsonPolicy(params={"infrastructure.router_type": "kv_load"})
    ws = {route(pol, hreq(i), mkctx(now=i * 2000.0, metrics=lambda w: (usage[w], 0))) for i in range(40)}
    assert ws == {1, 3}
    assert not pol.pending and not pol.prefix_state


# -- end to end -----------------------------------------------------------------------------------------

def test_end_to_end_simulation(tmp_path, monkeypatch):
    import json

    import dynosim
    from dynosim.router import policies

    monkeypatch.setitem(policies.POLICIES, "thompson", ThompsonPolicy)
    rows, t = [], 0
    for s in range(12):
        for turn in range(4):
            row = {"input_length": 600 + 512 * turn, "output_length": 20 + 5 * turn,
                   "hash_ids": list(range(s * 100, s * 100 + 2 + turn)), "session_id": f"s{s}",
                   "nvext": {"agent_hints": {"prefix_id": f"s{s}", "total_requests": 4, "osl": 32,
                                             "iat": "LOW"}}}
            if turn == 0:
                row["timestamp"] = t
                t += 40
            else:
                row["delay"] = 5
            rows.append(row)
    rows += [{"timestamp": t + 10 * k, "input_length": 300, "output_length": 10, "hash_ids": [9000 + k]}
             for k in range(10)]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    for opts in ({}, {"variant": "generalized", "preset": "original", "record": True}):
        res = dynosim.run(path, workers=4, router_mode="thompson", router={"policy_options": opts})
        df = res.requests
        assert len(df) == len(rows) and (df["status"] == "done").all()
        pol = res.extra["state"].extra["router"].policy
        assert isinstance(pol, ThompsonPolicy)
        assert pol.variant == opts.get("variant", "optimized")
        assert pol.stats["decisions"] == pol.stats["feedback"] == len(rows)
        assert not pol.pending and not pol.prefix_state and not pol.budgets
        assert pol.stats["sticky"] + pol.stats["switch"] == 36  # turns 2..4 of each session have a last worker
        if opts.get("preset") == "original":
            # floor 0.70 and the affinity bonus: turns 2 and 3 (R = 2, 1) stay; turn 4 (R = 0) is free
            kept = [d["chosen"] == d["last"] for d in pol.decisions_log if d["last"] is not None and d["reuse_budget"]]
            assert len(kept) == 24 and sum(kept) >= 22
