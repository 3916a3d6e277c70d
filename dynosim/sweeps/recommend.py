"""The answer of a sweep: which deployment to run at each load, the runner-up, and why the others lose.

Pure functions over the aggregated points (one row per deployment × load; see ``pareto.aggregate``). At
each load level the winner is the deployment that meets every objective with the most output tokens/s/GPU
(ties: the lower p90 TTFT). A second view asks how few GPUs carry that load: a deployment that meets the
objectives up to load ℓ* on the budget's G GPUs carries load L on about G·L/ℓ* GPUs (replicas scale
linearly; rounded up to whole workers; ``extrapolated`` when ℓ* < L, i.e. more GPUs than were simulated).
The result is a JSON-able dict (``recommendation.json``, schema ``dynosim.recommendation/1``, documented in
the README) plus a verdict in words.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dynosim.sweeps.objectives import Objectives

SCHEMA = "dynosim.recommendation/1"
RANK = "output_tps_per_gpu"
FIGURES = ("output_tps_per_gpu", "tps_user_mean", "ttft_p50", "ttft_p90", "itl_mean", "itl_p90", "e2e_p90",
           "goodput_rps", "slo_attainment", "requests_per_s", "prefix_reuse")
NEAR_TIE = 0.02    # below this relative margin the winner is called a near tie
EXIT_NOTHING_MEETS = 4


def load_text(load: float, kind: str) -> str:
    return f"c{load:g}" if kind == "concurrency" else f"×{load:g}"


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _point(r: pd.Series) -> dict[str, Any]:
    return {"config": str(r["config"]), "mode": str(r["mode"]), "tp": int(r.get("tp", 1)),
            "workers": int(r.get("workers", 0)), "prefill": int(r.get("prefill", 0)),
            "decode": int(r.get("decode", 0)), "router": str(r.get("router", "")),
            "num_gpus": int(round(float(r.get("num_gpus", 0)))),
            "figures": {k: _num(r[k]) for k in FIGURES if k in r},
            "ci": {k: _num(r[f"{k}_ci"]) for k in FIGURES if f"{k}_ci" in r}}


def _rejection(r: pd.Series, obj: Objectives) -> dict[str, Any]:
    failed = int(r.get("failed", 0))
    return {"config": str(r["config"]), "missed": [m.as_dict() for m in obj.misses(r)], "failed_requests": failed}


def _badness(rej: dict[str, Any]) -> float:
    """How far a rejected point is from meeting the objectives: its worst relative overshoot; failed requests
    and missing figures rank last."""
    pcts = [m["over_pct"] for m in rej["missed"]]
    worst = max((p for p in pcts if p is not None), default=0.0)
    return worst + (1e9 if rej["failed_requests"] else 0.0) + (1e12 if None in pcts else 0.0)


def _headroom(feasible: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per deployment: the highest load it meets the objectives at, and its tokens/s/GPU there."""
    out = {}
    for config, g in feasible.groupby("config", sort=False):
        top = g.loc[g["load"].idxmax()]
        out[str(config)] = (float(top["load"]), float(top[RANK]))
    return out


def rank(ok: pd.DataFrame, headroom: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Feasible points at one load, best first: most output tokens/s/GPU; within ``NEAR_TIE`` of the top
    (deployments that all keep up serve the same tokens) the one meeting the objectives up to the highest
    load wins (then the one with more tokens/s/GPU there), then the lower p90 TTFT."""
    if ok.empty:
        return ok
    top = float(ok[RANK].max())
    tied = ok[RANK] >= top * (1 - NEAR_TIE)
    room = [headroom.get(c, (0.0, 0.0)) if t else (0.0, 0.0) for c, t in zip(ok["config"], tied)]
    key = pd.DataFrame({"tied": ~tied, "room": [-r[0] for r in room], "room_tps": [-r[1] for r in room],
                        "tps": -ok[RANK], "ttft": ok["ttft_p90"]}, index=ok.index)
    return ok.loc[key.sort_values(["tied", "room", "room_tps", "tps", "ttft"]).index]


def fewest_gpus(points: pd.DataFrame, meets: pd.Series, load: float, budget: int) -> dict[str, Any] | None:
    """The deployment that carries ``load`` on the fewest GPUs, from the highest load each one meets the
    objectives at (ties: more output tokens/s/GPU)."""
    best = None
    for config, g in points[meets].groupby("config", sort=False):
        top = g.loc[g["load"].idxmax()]
        max_load = float(top["load"])
        workers = max(int(top.get("workers", 1)), 1)
        per_worker = max(int(round(float(top.get("num_gpus", budget)) / workers)), 1)
        need = math.ceil(budget * load / max_load / per_worker - 1e-9) * per_worker
        cand = {"config": str(config), "gpus": int(need), "max_load": max_load, "extrapolated": max_load < load,
                "_rank": (need, -float(top[RANK]))}
        if best is None or cand["_rank"] < best["_rank"]:
            best = cand
    if best is not None:
        best.pop("_rank")
    return best


def recommend(points: pd.DataFrame, obj: Objectives, *, gpu_budget: int, trace: str = "",
              rate_rps: float | None = None) -> dict[str, Any]:
    """The recommendation over aggregated sweep points. ``rate_rps``: the trace's offered rate at ×1."""
    meets = obj.meets(points) if len(points) else pd.Series(dtype=bool)
    headroom = _headroom(points[meets]) if len(points) else {}
    loads = []
    for load, at in points.groupby("load", sort=True):
        kind = str(at["load_kind"].iloc[0]) if "load_kind" in at else "rate"
        ok = rank(at[meets.loc[at.index]], headroom)
        bad = at[~meets.loc[at.index]]
        rejected = sorted((_rejection(r, obj) for _, r in bad.iterrows()), key=_badness)
        best = _point(ok.iloc[0]) if len(ok) else None
        runner = _point(ok.iloc[1]) if len(ok) > 1 else None
        margin = None
        if best and runner:
            b, r = ok.iloc[0], ok.iloc[1]
            reps = int(min(b.get("repeats", 1), r.get("repeats", 1)))
            ci = math.hypot(float(b.get(f"{RANK}_ci", 0.0)), float(r.get(f"{RANK}_ci", 0.0))) if reps > 1 else None
            diff = float(b[RANK] - r[RANK])
            margin = {"metric": RANK, "abs": diff, "ratio": diff / float(r[RANK]) if r[RANK] else None,
                      "ci": ci, "significant": (diff > ci) if ci is not None else None}
        closest = []
        if best is None:
            by_config = {str(r["config"]): r for _, r in bad.iterrows()}
            closest = [{**_point(by_config[rej["config"]]), **rej} for rej in rejected[:3]]
        loads.append({"load": float(load), "load_kind": kind,
                      "best_max_load": headroom[best["config"]][0] if best else None,
                      "rate_rps": rate_rps * float(load) if rate_rps is not None and kind == "rate" else None,
                      "points": int(len(at)), "feasible_points": int(len(ok)), "best": best, "runner_up": runner,
                      "margin": margin, "fewest_gpus": fewest_gpus(points, meets, float(load), gpu_budget),
                      "rejected": rejected, "closest": closest})
    target = next((x for x in loads if math.isclose(x["load"], obj.target_load)), None)
    rec = {"schema": SCHEMA, "trace": trace, "gpu_budget": gpu_budget, "objectives": obj.as_dict(),
           "target": {"load": obj.target_load, "load_kind": obj.target_kind,
                      "rate_rps": rate_rps * obj.target_load if rate_rps is not None and obj.target_kind == "rate"
                      else None},
           "feasible": bool(target and target["best"]), "loads": loads}
    rec["verdict"] = verdict(rec, obj)
    return rec


def _figs(p: dict[str, Any], obj: Objectives) -> str:
    f = p["figures"]
    parts = [f"{f[RANK]:,.0f} output tok/s/GPU"]
    for o, _ in obj.limits() or []:
        v = f.get(o.column)
        if v is not None:
            parts.append(f"{o.label} {v:,.0f} ms")
    if not obj.any and f.get("ttft_p90") is not None:
        parts.append(f"TTFT p90 {f['ttft_p90']:,.0f} ms")
    return ", ".join(parts)


def where_text(entry: dict[str, Any]) -> str:
    lt = load_text(entry["load"], entry["load_kind"])
    return f"{lt} ({entry['rate_rps']:.2f} req/s)" if entry.get("rate_rps") else lt


def verdict(rec: dict[str, Any], obj: Objectives) -> str:
    """The recommendation at the target load in a few sentences."""
    budget = rec["gpu_budget"]
    entry = next((x for x in rec["loads"] if math.isclose(x["load"], rec["target"]["load"])), None)
    goal = f"meeting {obj.text()}" if obj.any else "with no latency objectives given (--ttft-p90, --itl, --e2e)"
    if entry is None:
        return f"The target load {load_text(rec['target']['load'], rec['target']['load_kind'])} was not swept."
    where = where_text(entry)
    if entry["best"] is None:
        out = [f"Nothing {goal} at {where} on {budget} GPUs."]
        if entry["closest"]:
            c = entry["closest"][0]
            why = "; ".join(_miss_text(c)) or "failed requests"
            out.append(f"Closest: {c['config']} ({why}).")
        lower = [x for x in rec["loads"] if x["best"] is not None and x["load"] < entry["load"]]
        if lower:
            x = lower[-1]
            out.append(f"The highest load that can be met is {where_text(x)}, by {x['best']['config']}.")
        fg = entry["fewest_gpus"]
        if fg:
            out.append(f"{fg['config']} meets them up to {load_text(fg['max_load'], entry['load_kind'])}, so "
                       f"about {_gpus(fg['gpus'])} would carry {load_text(entry['load'], entry['load_kind'])} "
                       "(extrapolated).")
        return " ".join(out)
    b = entry["best"]
    out = [f"At {where} on {budget} GPUs, {goal}, run {b['config']}: {_figs(b, obj)}."]
    m, r = entry["margin"], entry["runner_up"]
    if r is not None and m is not None:
        pct = 100 * m["ratio"] if m["ratio"] is not None else float("nan")
        ci = f" ± {m['ci']:,.1f}" if m["ci"] is not None else ""
        out.append(f"Runner-up {r['config']}: {r['figures'][RANK]:,.0f} tok/s/GPU ({pct:+.1f}%{ci}).")
        if m["significant"] is False or (m["ratio"] is not None and abs(m["ratio"]) < NEAR_TIE):
            out.append("That is a near tie (at a fixed load every deployment that keeps up serves the same "
                       f"tokens); {b['config']} wins on headroom: it meets the objectives up to "
                       f"{load_text(entry['best_max_load'], entry['load_kind'])}.")
    elif r is None:
        out.append("It is the only deployment that meets them.")
    fg = entry["fewest_gpus"]
    if fg:
        ext = " (extrapolated beyond the budget)" if fg["extrapolated"] else ""
        out.append(f"Fewest GPUs: {fg['config']} meets the objectives up to "
                   f"{load_text(fg['max_load'], entry['load_kind'])} on {budget} GPUs, so about {_gpus(fg['gpus'])} "
                   f"carry {load_text(entry['load'], entry['load_kind'])}{ext}.")
    n_rej = len(entry["rejected"])
    if n_rej:
        counts: dict[str, int] = {}
        for rej in entry["rejected"]:
            for mm in rej["missed"]:
                counts[mm["label"]] = counts.get(mm["label"], 0) + 1
            if rej["failed_requests"]:
                counts["failed requests"] = counts.get("failed requests", 0) + 1
        why = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        out.append(f"{n_rej} of {entry['points']} deployments miss at {load_text(entry['load'], entry['load_kind'])}: "
                   f"{why}.")
    return " ".join(out)


def _gpus(n: int) -> str:
    return f"{n} GPU" + ("" if n == 1 else "s")


def _miss_text(rej: dict[str, Any]) -> list[str]:
    out = []
    for m in rej["missed"]:
        v = m["value"]
        out.append(f"{m['label']} {v:,.0f} ms > {m['limit']:,.0f} (+{m['over_pct']:,.0f}%)" if v is not None
                   else f"{m['label']}: no figure (nothing completed)")
    if rej["failed_requests"]:
        out.append(f"{rej['failed_requests']} failed requests")
    return out


def miss_text(rej: dict[str, Any]) -> str:
    """What a rejected deployment missed, in words."""
    return "; ".join(_miss_text(rej)) or "—"
