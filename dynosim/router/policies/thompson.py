"""NeMo Agent Toolkit's Thompson-sampling router (``external/dynamo``), as a dynosim policy.

Written from the behavioural description in ``shared/research/traces-and-thompson.md``
(Part B); no NAT code is copied. One object plays both NAT components:

- the *processor*'s per-``prefix_id`` reuse budget (``{total, processed}``), and
- the *router*: a LinTS model (9 features) and a Beta bandit per worker
  (``thompson_bandit.WorkerBandits``; parameters in ``thompson_params``), the
  affinity / switching / load modifiers, temperature-softmax sampling, and
  delayed feedback (reward from end-to-end ms per output token against
  hierarchical EMA baselines, timeouts swept on new arrivals).

Hints are the request's NAT agent hints, parsed once by the frontend into
``req.agent`` (``dynosim.router.hints.AgentHints``: ``prefix_id``,
``total_requests``, OSL and IAT levels, priority; NAT's defaults for missing
ones: a unique ``auto-<rid>`` prefix id, ``total_requests`` 1 (so no stickiness),
OSL and IAT ``MEDIUM``). A request built without a frontend (``req.agent`` None)
has its ``req.hints`` parsed at selection. The router never looks at ``req.osl``
(the true output length), only at the OSL hint.

Per decision, for each candidate worker ``w`` (R = reuse budget after this
request, f = IAT factor, o = overlap, ``last`` = the prefix's previous worker)::

    s_w = θ_wᵀx_w + base_ts_weight/(1+R·f) · p_w                       θ ~ N(A⁻¹b, v²A⁻¹), p ~ Beta(α, β)
    s_w += (aff_base + aff_reuse·R + aff_iat·f)(0.5 + 0.5·o)   if R > 0 and w == last
    s_w -= sw_base + sw_reuse·R + sw_iat·f                    if R > 0, last exists and w != last
    s_w *= 1/(1 + max(0, G·gpu + Q·queue + OW·outstanding + JG·c·gpu + JQ·c·queue))
           (floored at sticky_load_floor for the sticky worker when R > 0)
    w ~ softmax(s / clip(temp_base/(1+R·f), temp_min, temp_max))

Parameters are named by their NAT ``config.yaml`` dotted paths; their defaults,
the ``"tuned"`` / ``"original"`` presets and their validation are
``thompson_params``.

Randomness: three numpy Generators spawned from ``seed`` at construction (LinTS
normals, Beta draws, the softmax draw), kept separate as the notes advise, so a
run is reproducible and one stream's use does not shift another's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from dynosim.request import Request, RequestStatus
from dynosim.router.context import RoutingContext, engine_metrics
from dynosim.router.hints import AgentHints
from dynosim.router.policies.thompson_bandit import WorkerBandits
from dynosim.router.policies.thompson_params import PARAM_DEFAULTS, PRESETS, resolve_params

DECODE_COST = {"LOW": 1.0, "MEDIUM": 2.0, "HIGH": 3.0}
IAT_FACTOR = {"LOW": 1.5, "MEDIUM": 1.0, "HIGH": 0.6}  # the code's values (the README diagram says HIGH=2.0)
PREFILL_BIN_CUTS = (0.25, 0.75)
FEATURE_DIM = 9
FEATURES = ("bias", "inv_load", "overlap", "affinity", "outstanding", "decode", "prefill", "iat", "reuse")


VARIANTS = ("optimized", "generalized")


# -- the policy -------------------------------------------------------------------------------------

@dataclass
class _Pending:
    wid: int
    x: np.ndarray
    osl: str
    prefill_bin: str
    start: float
    prefix_id: str


def prefill_bin(prefill_cost: float) -> str:
    lo, hi = PREFILL_BIN_CUTS
    return "LOW" if prefill_cost < lo else "MEDIUM" if prefill_cost < hi else "HIGH"


class ThompsonPolicy:
    """NAT's contextual Thompson-sampling router (LinTS + Beta bandit), see the module docstring.

    Args:
        seed: seeds the three random streams (LinTS normals, Beta draws, softmax draw).
        variant: ``"optimized"`` (default; NAT's ``optimized``/``components`` router, which
            scrapes engine metrics) or ``"generalized"`` (the older router). The variant only
            sets the defaults of ``overlap_as_count`` and ``zero_load_metrics``.
        preset: ``"tuned"`` (default; optimized ``config.yaml``) or ``"original"``
            (generalized CLI / PARAMETERS.md) parameter defaults.
        params: overrides by dotted config path (``{"affinity.sticky_load_floor": 0.5}``) or as
            a nested dict shaped like ``config.yaml``. Strings are cast to numbers. Unknown names
            raise ``ValueError``.
        overlap_as_count: quirk of the generalized variant. ``True`` uses Dynamo's overlap score
            as-is, i.e. the matched-block *count* (can exceed 1), in the overlap feature and the
            affinity bonus (clipped to [0, 1] only inside the prefill cost). ``False`` uses the
            fraction ``matched / prompt blocks`` (optimized ``kv_indexer.py``). ``None``: the
            variant's behaviour (count for generalized, fraction for optimized).
        zero_load_metrics: quirk of the generalized variant, whose metrics object is hard-coded to
            ``None``: ``gpu = queue = 0`` for every worker, so the only load signal is the
            sticky-session outstanding work. ``False`` uses the optimized signals: ``gpu`` = KV
            usage and ``queue = max(waiting, pending_w)`` from ``engine_metrics`` (scraped every
            ``metrics_interval_ms``), or before any scrape / with no metrics source
            ``gpu = min(1, pending_w/20)``, ``queue = pending_w`` (``pending_w``: this router's
            decisions on w awaiting feedback). ``None``: the variant's behaviour.
        post_decision_context: quirk of both variants (default ``True``, faithful): the context
            vector stored for the LinTS update is rebuilt *after* the prefix assignment is
            recorded, so its outstanding-work feature includes this request's own reservation
            (and no longer the prefix's previous one). ``False`` stores the selection-time vector.
        metrics_interval_ms: how stale the scraped engine metrics may be (NAT scrapes each
            worker's Prometheus endpoint every 1 s); 0 reads them live at every decision.
        record: keep per-decision and per-feedback dicts in ``decisions_log`` / ``feedback_log``
            (NAT's debug traces: scores, probabilities, contexts, baselines, rewards).
    """

    name: ClassVar[str] = "thompson"
    uses_overlap: ClassVar[bool] = True
    uses_load: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ("variant", "preset", "params", "overlap_as_count", "zero_load_metrics",
                                          "post_decision_context", "metrics_interval_ms", "record")

    def __init__(self, seed: int = 0, *, variant: str = "optimized", preset: str = "tuned",
                 params: Mapping[str, Any] | None = None, overlap_as_count: bool | None = None,
                 zero_load_metrics: bool | None = None, post_decision_context: bool = True,
                 metrics_interval_ms: float = 1000.0, record: bool = False, **_: object):
        if variant not in VARIANTS:
            raise ValueError(f"unknown thompson variant {variant!r}; choose from {list(VARIANTS)}")
        if metrics_interval_ms < 0:
            raise ValueError("metrics_interval_ms must be >= 0")
        self.variant = variant
        self.preset = preset
        self.params = resolve_params(preset, params)
        generalized = variant == "generalized"
        self.overlap_as_count = generalized if overlap_as_count is None else bool(overlap_as_count)
        self.zero_load_metrics = generalized if zero_load_metrics is None else bool(zero_load_metrics)
        self.post_decision_context = bool(post_decision_context)
        self.metrics_interval_ms = float(metrics_interval_ms)
        self.record = bool(record)

        p = self.params
        self.router_type = p["infrastructure.router_type"]
        self.aff_base, self.aff_reuse, self.aff_iat = p["affinity.base"], p["affinity.reuse_weight"], \
            p["affinity.iat_weight"]
        self.sticky_floor = p["affinity.sticky_load_floor"]
        self.base_ts_weight = p["exploration.base_ts_weight"]
        self.temp_base, self.temp_min, self.temp_max = p["exploration.temperature.base"], \
            p["exploration.temperature.min"], p["exploration.temperature.max"]
        self.sw_base, self.sw_reuse, self.sw_iat = p["switching_cost.base"], p["switching_cost.reuse_penalty"], \
            p["switching_cost.iat_penalty"]
        self.w_queue = p["load_balancing.queue_penalty_weight"]
        self.w_gpu = p["load_balancing.gpu_penalty_weight"]
        self.w_out = p["load_balancing.outstanding_work_weight"]
        self.w_jg = p["load_balancing.job_gpu_coupling_weight"]
        self.w_jq = p["load_balancing.job_queue_coupling_weight"]
        self.prefill_scale, self.prefill_weight = p["prefill.token_scale"], p["prefill.weight"]
        self.lam, self.v = p["lints.lambda"], p["lints.v"]
        self.forget = min(max(p["lints.forget_rate"], 1e-6), 0.999999)  # NAT clamps it the same way
        self.timeout_ms = p["feedback.timeout_seconds"] * 1000.0
        self.sweep_ms = p["feedback.sweep_interval_seconds"] * 1000.0
        self.timeout_reward = min(max(p["feedback.timeout_reward"], 0.0), 1.0)
        self.ema_alpha = p["feedback.latency_ema_alpha"]

        ss = np.random.SeedSequence(int(seed) % (1 << 128))
        self._rng_lints, self._rng_beta, self._rng_choice = (np.random.default_rng(s) for s in ss.spawn(3))

        # processor side: prefix_id -> [total, processed]
        self.budgets: dict[str, list[int]] = {}
        # router side: prefix_id -> (worker, reuse_remaining, outstanding-work contribution)
        self.prefix_state: dict[str, tuple[int, int, float]] = {}
        self._work: dict[int, float] = {}
        self._pins: dict[int, int] = {}
        # the per-worker models: LinTS (A, b) and Beta(α, β)
        self.bandits = WorkerBandits(FEATURE_DIM, self.lam, self.forget)
        # feedback
        self.pending: dict[int, _Pending] = {}
        self._pending_on: dict[int, int] = {}
        self._last_sweep = -math.inf
        self.ema_global: dict[bool, float] = {}
        self.ema_worker: dict[tuple[int, bool], float] = {}
        self.ema_bucket: dict[tuple[int, str, str, bool], float] = {}
        # engine metrics snapshot (optimized variant)
        self._scraped: dict[int, tuple[float, float]] = {}
        self._last_scrape = -math.inf
        self.stats = {"decisions": 0, "sticky": 0, "switch": 0, "feedback": 0, "timeouts": 0,
                      "unknown_feedback": 0}
        self.decisions_log: list[dict] = []
        self.feedback_log: list[dict] = []

    # -- small public helpers ----------------------------------------------------------------------
    def temperature(self, reuse_budget: int, iat_factor: float) -> float:
        """Softmax temperature: clip(temp_base / (1 + R·f), temp_min, temp_max)."""
        t = self.temp_base / (1.0 + max(reuse_budget, 0) * iat_factor)
        return min(max(t, self.temp_min), self.temp_max)

    @staticmethod
    def reward(metric: float, baseline: float, success: bool = True) -> float:
        """1 / (1 + metric / max(baseline, 1e-3)), or 0 for a failed request."""
        if not success:
            return 0.0
        return 1.0 / (1.0 + metric / max(baseline, 1e-3))

    def consume_reuse_budget(self, prefix_id: str, total_hint: int) -> int:
        """Processor bookkeeping for one request: requests still expected after it (state dropped at 0)."""
        st = self.budgets.get(prefix_id)
        if st is None:
            st = self.budgets[prefix_id] = [0, 0]
        st[0] = max(st[0], total_hint)
        st[1] += 1
        remaining = max(st[0] - st[1], 0)
        if remaining == 0:
            del self.budgets[prefix_id]
        return remaining

    def outstanding_work(self, worker: int) -> float:
        """Σ over prefixes pinned to ``worker`` of reuse_remaining·(decode+prefill cost)·iat_factor."""
        return self._work.get(worker, 0.0)

    def baseline(self, wid: int, osl: str, pbin: str, per_tok: bool, fallback: float) -> float:
        """Hierarchical EMA baseline: bucket, else worker, else global, else max(1, fallback)."""
        v = self.ema_bucket.get((wid, osl, pbin, per_tok))
        if v is None:
            v = self.ema_worker.get((wid, per_tok))
        if v is None:
            v = self.ema_global.get(per_tok)
        return v if v is not None else max(1.0, float(fallback))

    # -- prefix state --------------------------------------------------------------------------------
    def _set_prefix(self, pid: str, wid: int, reuse: int, decode_cost: float, prefill_cost: float,
                    iat_factor: float) -> None:
        old = self.prefix_state.pop(pid, None)
        if old is not None:
            ow, _, contrib = old
            self._pins[ow] -= 1
            self._work[ow] = 0.0 if self._pins[ow] == 0 else self._work[ow] - contrib
        if reuse > 0:
            contrib = reuse * (decode_cost + max(prefill_cost, 0.0)) * iat_factor
            self.prefix_state[pid] = (wid, reuse, contrib)
            self._pins[wid] = self._pins.get(wid, 0) + 1
            self._work[wid] = self._work.get(wid, 0.0) + contrib

    # -- load signals --------------------------------------------------------------------------------
    def _load_signals(self, ctx: RoutingContext, workers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        n = len(workers)
        if self.zero_load_metrics:
            return np.zeros(n), np.zeros(n)
        pend = np.array([self._pending_on.get(w, 0) for w in workers], dtype=float)
        if ctx.metrics_fn is not None and ctx.now - self._last_scrape >= self.metrics_interval_ms:
            self._last_scrape = ctx.now
            for w in workers:
                kv, waiting = engine_metrics(ctx, w)
                self._scraped[w] = (float(kv), float(waiting))
        gpu = np.empty(n)
        queue = np.empty(n)
        for i, w in enumerate(workers):
            snap = self._scraped.get(w) if ctx.metrics_fn is not None else None
            if snap is None:  # before the first scrape of this worker
                gpu[i] = min(1.0, pend[i] / 20.0)
                queue[i] = pend[i]
            else:
                gpu[i] = snap[0]
                queue[i] = max(snap[1], pend[i])
        return gpu, queue

    # -- feedback ------------------------------------------------------------------------------------
    def _drop_pending(self, rid: int) -> _Pending | None:
        rec = self.pending.pop(rid, None)
        if rec is not None:
            self._pending_on[rec.wid] -= 1
        return rec

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < self.sweep_ms:
            return
        self._last_sweep = now
        expired = [rid for rid, rec in self.pending.items() if now - rec.start >= self.timeout_ms]
        for rid in expired:
            rec = self._drop_pending(rid)
            self.bandits.update(rec.wid, rec.x, self.timeout_reward)
            self.stats["timeouts"] += 1
            if self.record:
                self.feedback_log.append({"kind": "timeout", "rid": rid, "wid": rec.wid, "now": now,
                                          "reward": self.timeout_reward, "prefix_id": rec.prefix_id})

    def on_first_token(self, req: Request, now: float) -> None:
        return None

    def on_complete(self, req: Request, now: float) -> None:
        rec = self._drop_pending(req.rid)
        if rec is None:  # expired (or routed by kv_load): NAT answers "unknown_decision"
            self.stats["unknown_feedback"] += 1
            return
        routed = req.routed if math.isfinite(req.routed) else rec.start
        latency = max(0.0, now - routed)
        tokens_out = int(req.generated)
        success = req.status is not RequestStatus.FAILED
        per_tok = tokens_out > 0
        metric = latency / tokens_out if per_tok else latency
        base = self.baseline(rec.wid, rec.osl, rec.prefill_bin, per_tok, metric)
        r = self.reward(metric, base, success)
        after = base
        if success:
            a = self.ema_alpha
            for table, key in ((self.ema_global, per_tok), (self.ema_worker, (rec.wid, per_tok)),
                               (self.ema_bucket, (rec.wid, rec.osl, rec.prefill_bin, per_tok))):
                old = table.get(key)
                table[key] = metric if old is None else a * metric + (1.0 - a) * old
            after = self.ema_bucket[(rec.wid, rec.osl, rec.prefill_bin, per_tok)]
        self.bandits.update(rec.wid, rec.x, r)
        self.stats["feedback"] += 1
        if self.record:
            self.feedback_log.append({"kind": "feedback", "rid": req.rid, "wid": rec.wid, "now": now,
                                      "latency_ms": latency, "tokens_out": tokens_out, "metric": metric,
                                      "per_tok": per_tok, "baseline_used": base, "baseline_after": after,
                                      "reward": r, "success": success})

    # -- selection -----------------------------------------------------------------------------------
    def select(self, req: Request, ctx: RoutingContext) -> int:
        now = ctx.now
        self._sweep(now)
        hints = req.agent if req.agent is not None else AgentHints.parse(req.hints, req.rid)
        R = self.consume_reuse_budget(hints.prefix_id, hints.total_requests)
        workers = list(ctx.workers)
        n = len(workers)
        gpu, queue = self._load_signals(ctx, workers)

        if self.router_type == "kv_load":  # lowest gpu, ties at random; no learning, no prefix state
            lo = gpu.min()
            tied = [w for w, g in zip(workers, gpu) if g == lo]
            w = tied[int(self._rng_choice.integers(len(tied)))]
            self.stats["decisions"] += 1
            return w

        osl, iat = hints.osl, hints.iat
        d, f = DECODE_COST[osl], IAT_FACTOR[iat]
        entry = self.prefix_state.get(hints.prefix_id)
        last = entry[0] if entry is not None else None

        depths = ctx.overlap(req)
        raw = np.array([float(depths[w]) if w < len(depths) else 0.0 for w in workers])
        o = raw if self.overlap_as_count else raw / max(1, len(req.seq_hashes))
        pcost = max(0, req.isl) * (1.0 - np.clip(o, 0.0, 1.0)) / self.prefill_scale * self.prefill_weight
        job = d + pcost
        out = np.array([self._work.get(w, 0.0) for w in workers])
        is_last = np.array([w == last for w in workers]) if last is not None else np.zeros(n, dtype=bool)

        X = np.empty((n, FEATURE_DIM))
        X[:, 0] = 1.0
        X[:, 1] = 1.0 / (1.0 + self.w_gpu * np.maximum(gpu, 0.0) + self.w_queue * np.maximum(queue, 0.0))
        X[:, 2] = o
        X[:, 3] = is_last
        X[:, 4] = np.tanh(0.1 * out)
        X[:, 5] = d / 3.0
        X[:, 6] = np.tanh(pcost)
        X[:, 7] = f / 1.5
        X[:, 8] = math.tanh(0.25 * R)

        for w in workers:
            self.bandits.ensure(w)
        post = [self.bandits.posterior(w) for w in workers]
        mu = np.stack([m for m, _ in post])
        S = np.stack([s for _, s in post])
        z = self._rng_lints.standard_normal((n, FEATURE_DIM))
        theta = mu + self.v * np.einsum("nij,nj->ni", S, z)
        lin = np.einsum("ni,ni->n", theta, X)
        ab = np.array([self.bandits.beta[w] for w in workers])
        ts = self._rng_beta.beta(ab[:, 0], ab[:, 1])

        scores = lin + (self.base_ts_weight / (1.0 + R * f)) * ts
        if R > 0 and last is not None:
            bonus = (self.aff_base + self.aff_reuse * R + self.aff_iat * f) * (0.5 + 0.5 * o)
            penalty = self.sw_base + self.sw_reuse * R + self.sw_iat * f
            scores = np.where(is_last, scores + bonus, scores - penalty)
        pen = (self.w_gpu * gpu + self.w_queue * queue + self.w_out * np.maximum(out, 0.0)
               + self.w_jg * job * gpu + self.w_jq * job * queue)
        load_mod = 1.0 / (1.0 + np.maximum(pen, 0.0))
        if R > 0:
            load_mod = np.where(is_last, np.maximum(load_mod, self.sticky_floor), load_mod)
        with np.errstate(invalid="ignore", over="ignore"):
            scores = scores * load_mod
        scores = np.where(np.isfinite(scores), scores, -1e9)

        T = self.temperature(R, f)
        e = np.exp((scores - scores.max()) / max(1e-6, T))
        tot = e.sum()
        probs = e / tot if tot > 0 and np.isfinite(tot) else np.full(n, 1.0 / n)
        u = self._rng_choice.random()
        cum = np.cumsum(probs)
        hit = np.nonzero(u <= cum)[0]
        idx = int(hit[0]) if len(hit) else 0
        w = workers[idx]

        self._set_prefix(hints.prefix_id, w, R, d, float(pcost[idx]), f)
        x = X[idx].copy()
        if self.post_decision_context:
            x[4] = math.tanh(0.1 * self._work.get(w, 0.0))
        self.pending[req.rid] = _Pending(w, x, osl, prefill_bin(float(pcost[idx])), now, hints.prefix_id)
        self._pending_on[w] = self._pending_on.get(w, 0) + 1

        self.stats["decisions"] += 1
        if last is not None:
            self.stats["sticky" if w == last else "switch"] += 1
        req.router_score = float(scores[idx])
        if self.record:
            self.decisions_log.append({
                "now": now, "rid": req.rid, "prefix_id": hints.prefix_id, "reuse_budget": R, "last": last,
                "chosen": w, "workers": workers, "osl": osl, "iat": iat, "temperature": T,
                "scores": scores.tolist(), "probs": probs.tolist(), "load_mod": load_mod.tolist(),
                "overlap": o.tolist(), "prefill_cost": pcost.tolist(), "gpu": gpu.tolist(),
                "queue": queue.tolist(), "outstanding": out.tolist(), "x": X.tolist(), "stored_x": x.tolist(),
            })
        return w


__all__ = ["FEATURES", "PARAM_DEFAULTS", "PRESETS", "VARIANTS", "ThompsonPolicy", "prefill_bin", "resolve_params"]
