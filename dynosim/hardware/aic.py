"""Pass times from aiconfigurator-core's measured per-operation database (``--timing aic``).

Every pass is priced for the batch the scheduler formed: new prefill tokens of
the requests prefilling, and the decode requests with their summed KV tokens;
a pass that does both is priced as one mixed iteration. With attention data
parallelism the batch is split evenly over the ranks and the iteration costs
what its slowest rank costs (the database takes one entry per rank).

Speed: a query costs about 0.015-0.05 ms, so passes that prefill are priced
directly (and memoised). Decode-only passes, which fast-forwarded stretches take
by the thousand, read a table per batch size over the per-request context,
filled cell by cell where passes fall (see ``_cell_nodes``);
``benchmarks/aic_consistency.py`` checks the table against direct queries
(target: within 0.5%). Stepping and fast-forwarding both use the table, so
they agree exactly.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from functools import lru_cache

import numpy as np

from dynosim.hardware.catalog import HardwareError, quiet_aic_logs, resolve_model
from dynosim.hardware.model import AIC_KV_DTYPE, AIC_WEIGHT_DTYPE
from dynosim.hardware.spec import HardwareSpec

TABLE_RATIO = 1.05        # cells of the decode table: per-request context c in [1.05^j, 1.05^(j+1))
TABLE_TOLERANCE = 0.001   # a cell is split while its midpoint is further than this from the chord
_MAX_CELLS = 330          # 1.05^330 ≈ 1e7 tokens of context per request: beyond any model


def aic_config(hw: HardwareSpec, nextn: int = 0) -> dict:
    """The database's engine identity for ``hw`` (what ``RustForwardPassPerfModel`` is built from)."""
    src = resolve_model(hw.model)
    cfg = {"schema_version": 1, "model_name": src.aic_path, "system_name": hw.system, "backend": hw.backend,
           "backend_version": hw.version(), "tp_size": hw.tp, "pp_size": hw.pp}
    if hw.shape.is_moe:
        cfg.update(moe_ep_size=hw.ep, moe_tp_size=hw.moe_tp, attention_dp_size=hw.dp)
    # always the dtypes the memory model sizes, so price and capacity describe the same engine
    w = hw.weights_dtype
    cfg["weight_dtype"] = "fp8_block" if w == "fp8" and hw.weight_quant is None and hw.shape.block_fp8 \
        else AIC_WEIGHT_DTYPE[w]
    cfg["kv_cache_dtype"] = AIC_KV_DTYPE.get(hw.kv_dtype)
    if nextn:
        cfg["nextn"] = int(nextn)
    return cfg


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(int(total), parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def fpm(n_prefill: int, prefill_tokens: int, n_decode: int, decode_kv: int, dp: int = 1) -> list[dict]:
    """One iteration as the database's per-rank forward-pass metrics.

    With attention data parallelism the requests are spread over the ranks as evenly as they go and each
    rank's tokens follow its requests (a rank never has tokens without a request); idle ranks are empty.
    """
    def spread(n: int, tokens: int) -> tuple[list[int], list[int]]:
        ranks = min(max(n, 0), dp)
        if ranks == 0:
            return [0] * dp, [0] * dp
        return _split(n, ranks) + [0] * (dp - ranks), _split(tokens, ranks) + [0] * (dp - ranks)

    pre_n, pre_t = spread(n_prefill, prefill_tokens)
    dec_n, dec_t = spread(n_decode, decode_kv)
    out = []
    for a, b, c, d in zip(pre_n, pre_t, dec_n, dec_t):
        out.append({"scheduled_requests": {"num_prefill_requests": a, "sum_prefill_tokens": b,
                                           "num_decode_requests": c, "sum_decode_kv_tokens": d}})
    return out


def build_perf_model(hw: HardwareSpec, nextn: int = 0):
    """The strict native estimator for ``hw`` (never the silent regression fallback), probed once."""
    quiet_aic_logs()
    from aiconfigurator_core.sdk.rust_engine_step import RustForwardPassPerfModel

    cfg = aic_config(hw, nextn)
    try:
        model = RustForwardPassPerfModel.from_native(cfg)
        diag = model.diagnostics()
        if diag.get("source") != "aic":
            raise HardwareError(f"the database answered {hw.label()} with {diag.get('source')!r}, not measured data")
        for probe in (fpm(1, 1024, 0, 0, hw.dp), fpm(0, 0, hw.dp, 1024 * hw.dp, hw.dp),
                      fpm(hw.dp, 512 * hw.dp, hw.dp, 1024 * hw.dp, hw.dp)):
            t = model.estimate_forward_pass_time_ms(probe)
            if t is None or not np.isfinite(t) or t <= 0:
                raise HardwareError(f"the database gives no price for {hw.label()} ({probe[0]})")
    except HardwareError:
        raise
    except Exception as exc:  # the database raises ValueError or its own PerfDataNotAvailableError
        msg = str(exc).split("\n")[0]
        if len(msg) > 300:
            msg = msg[:300] + "…"
        raise HardwareError(f"the database cannot price {hw.label()} with {hw.weights_dtype} weights and "
                            f"{hw.kv_dtype} KV: {msg}. Try another --backend, --weight-quant/--kv-quant, or "
                            "--timing roofline for an uncalibrated estimate") from None
    return model


class AicTiming:
    """Timing model over the database for one worker (``whole_pass``: the scheduler prices whole passes)."""

    name = "aic"
    whole_pass = True
    pass_overhead_ms = 0.0

    def __init__(self, hw: HardwareSpec, nextn: int = 0, perf_model=None, source: str = "aic"):
        self.hw = hw
        self.nextn = nextn
        self.dp = hw.dp
        self.source = source
        self.model = perf_model if perf_model is not None else build_perf_model(hw, nextn)
        self._memo: dict[tuple[int, int, int, int], float] = {}
        self._tables: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._bounds_of: dict[int, tuple[list[int], np.ndarray]] = {}
        self.queries = 0

    # -- direct ----------------------------------------------------------------------------------------------
    def direct_ms(self, n_prefill: int, prefill_tokens: int, n_decode: int, decode_kv: int) -> float:
        """The database's price of one iteration, queried now (no table)."""
        self.queries += 1
        t = self.model.estimate_forward_pass_time_ms(fpm(n_prefill, prefill_tokens, n_decode, decode_kv, self.dp))
        if t is None:  # pragma: no cover - the strict model always answers once probed
            raise HardwareError(f"the database gave no price for a pass of {self.hw.label()}")
        return float(t)

    def pass_ms(self, n_prefill: int, prefill_tokens: int, n_decode: int, decode_kv: int) -> float:
        if prefill_tokens <= 0:
            return self.decode_only_ms(n_decode, decode_kv) if n_decode else 0.0
        key = (n_prefill, prefill_tokens, n_decode, decode_kv)
        t = self._memo.get(key)
        if t is None:
            t = self._memo[key] = self.direct_ms(*key)
        return t

    # -- decode table ----------------------------------------------------------------------------------------
    # Per batch size n, nodes (summed KV → ms) over cells of a geometric grid in the per-request context, each
    # cell priced the first time a pass falls in it. The database's decode price is piecewise linear with small
    # steps (its own lookups); a cell whose midpoint strays from the chord is split until the step is pinned to
    # one token of KV, so interpolating between nodes stays within TABLE_TOLERANCE of a direct query.
    def _bounds(self, n: int) -> tuple[list[int], np.ndarray]:
        """Cell boundaries for batch size n, in summed KV tokens: n · 1.05^j rounded, distinct, increasing."""
        b = self._bounds_of.get(n)
        if b is None:
            edges = np.unique(np.round(n * TABLE_RATIO ** np.arange(_MAX_CELLS))).astype(np.int64)
            edges = edges[edges >= n]
            b = self._bounds_of[n] = (edges.tolist(), edges.astype(float))
        return b

    def _cell_nodes(self, n: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        cells = self._tables.setdefault(n, {})
        nodes = cells.get(j)
        if nodes is None:
            edges = self._bounds(n)[0]
            lo, hi = edges[j], edges[j + 1]
            pts = {lo: self.direct_ms(0, 0, n, lo), hi: self.direct_ms(0, 0, n, hi)}
            self._refine(n, lo, hi, pts)
            xs = np.array(sorted(pts), dtype=float)
            nodes = cells[j] = (xs, np.array([pts[int(x)] for x in xs]))
        return nodes

    def _refine(self, n: int, lo: int, hi: int, pts: dict[int, float]) -> None:
        if hi - lo < 2:
            return
        mid = (lo + hi) // 2
        ym = pts[mid] = self.direct_ms(0, 0, n, mid)
        chord = pts[lo] + (pts[hi] - pts[lo]) * (mid - lo) / (hi - lo)
        if abs(chord - ym) > TABLE_TOLERANCE * ym:
            self._refine(n, lo, mid, pts)
            self._refine(n, mid, hi, pts)

    def decode_only_ms(self, n: int, kv: int) -> float:
        if n <= 0:
            return 0.0
        edges = self._bounds(n)[0]
        j = min(max(bisect_right(edges, kv) - 1, 0), len(edges) - 2)
        xs, ys = self._cell_nodes(n, j)
        return float(np.interp(kv, xs, ys))

    # -- the scheduler's and the planner's interface -------------------------------------------------------
    def prefill_ms(self, batch_size: int, mean_isl: int, mean_prefix: int) -> float:
        t = batch_size * (mean_isl - mean_prefix)
        return self.pass_ms(batch_size, t, 0, 0) if t > 0 else 0.0

    def decode_ms(self, active_kv_tokens: int, mean_ctx: float, total_kv_tokens: int) -> float:
        n = max(1, round(active_kv_tokens / mean_ctx)) if mean_ctx > 0 else 1
        return self.decode_only_ms(n, int(active_kv_tokens))

    def decode_ms_vec(self, active_kv_tokens: np.ndarray, mean_ctx: np.ndarray, total_kv_tokens: int) -> np.ndarray:
        """A decode stretch: the batch is fixed and its KV grows, so the passes cross few cells, in order."""
        kv = active_kv_tokens
        if len(kv) == 0:
            return np.zeros(0)
        first, last = float(kv[0]), float(kv[-1])
        n = max(1, int(round(first / float(mean_ctx[0]))))
        edges_l, edges = self._bounds(n)
        top = len(edges_l) - 2
        c0 = min(max(bisect_right(edges_l, first) - 1, 0), top)
        if c0 == min(max(bisect_right(edges_l, last) - 1, 0), top):   # the usual case: one cell
            xs, ys = self._cell_nodes(n, c0)
            return np.interp(kv, xs, ys)
        cells = np.clip(np.searchsorted(edges, kv, side="right") - 1, 0, top)
        out = np.empty(len(kv))
        cuts = [0, *(np.flatnonzero(np.diff(cells)) + 1).tolist(), len(kv)]
        for a, b in zip(cuts[:-1], cuts[1:]):
            xs, ys = self._cell_nodes(n, int(cells[a]))
            out[a:b] = np.interp(kv[a:b], xs, ys)
        return out


@lru_cache(maxsize=32)
def _cached(hw_json: str, nextn: int) -> AicTiming:
    return AicTiming(HardwareSpec.model_validate_json(hw_json), nextn)


def aic_timing(hw: HardwareSpec, nextn: int = 0) -> AicTiming:
    """A shared ``AicTiming`` per (hardware, nextn) in this process: the database and tables load once."""
    return _cached(json.dumps(hw.model_dump(mode="json"), sort_keys=True), int(nextn))
