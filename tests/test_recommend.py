"""The recommendation on hand-built points: who wins, who misses what by how much, the fewest-GPU view, and
the exit code when nothing meets the objectives."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from dynosim.sweeps.objectives import Objectives
from dynosim.sweeps.recommend import EXIT_NOTHING_MEETS, recommend
from dynosim.sweeps.spec import SweepSpec


def _pt(config, load, tps, ttft, itl, *, mode="agg", tp=1, workers=16, failed=0, ci=0.0, repeats=1, e2e=5000.0):
    return {"config": config, "mode": mode, "tp": tp, "workers": workers, "prefill": 0, "decode": 0,
            "router": "kv", "load": load, "load_kind": "rate", "repeats": repeats, "num_gpus": 16.0,
            "output_tps_per_gpu": tps, "output_tps_per_gpu_ci": ci, "tps_user_mean": 1000 / itl,
            "ttft_p90": ttft, "itl_mean": itl, "itl_p90": itl * 1.5, "e2e_p90": e2e, "goodput_rps": 1.0,
            "slo_attainment": 0.9, "failed": failed}


POINTS = pd.DataFrame([
    # load ×1: A and B meet both; C misses TTFT by 50%; D has failures
    _pt("A", 1.0, 100.0, 400.0, 20.0), _pt("B", 1.0, 90.0, 300.0, 18.0),
    _pt("C", 1.0, 120.0, 3000.0, 30.0), _pt("D", 1.0, 130.0, 100.0, 10.0, failed=3),
    # load ×4: only B meets; A misses ITL (60 > 50, +20%) and TTFT (2,500 > 2,000, +25%)
    _pt("A", 4.0, 350.0, 2500.0, 60.0), _pt("B", 4.0, 300.0, 1500.0, 45.0),
    _pt("C", 4.0, 380.0, 9000.0, 80.0), _pt("D", 4.0, 390.0, 900.0, 30.0, failed=1),
])
OBJ = Objectives(ttft_p90_ms=2000, itl_mean_ms=50)


def _at(rec, load):
    return next(x for x in rec["loads"] if x["load"] == load)


def test_winner_runner_up_margin_and_misses():
    rec = recommend(POINTS, OBJ, gpu_budget=16, trace="t.jsonl", rate_rps=2.0)
    one = _at(rec, 1.0)
    assert one["best"]["config"] == "A" and one["runner_up"]["config"] == "B"
    assert one["margin"]["abs"] == pytest.approx(10.0) and one["margin"]["ratio"] == pytest.approx(10 / 90)
    assert one["margin"]["ci"] is None and one["margin"]["significant"] is None      # one seed: no interval
    assert one["rate_rps"] == 2.0 and one["feasible_points"] == 2 and one["points"] == 4
    rej = {r["config"]: r for r in one["rejected"]}
    assert [m["objective"] for m in rej["C"]["missed"]] == ["ttft_p90_ms"]
    assert rej["C"]["missed"][0]["over"] == pytest.approx(1000.0)
    assert rej["C"]["missed"][0]["over_pct"] == pytest.approx(50.0)
    assert rej["D"]["missed"] == [] and rej["D"]["failed_requests"] == 3
    assert [r["config"] for r in one["rejected"]] == ["C", "D"]      # closest first; failures rank last
    four = _at(rec, 4.0)
    assert four["best"]["config"] == "B" and four["runner_up"] is None
    a = next(r for r in four["rejected"] if r["config"] == "A")
    assert [(m["objective"], round(m["over_pct"], 6)) for m in a["missed"]] == [("ttft_p90_ms", 25.0),
                                                                                 ("itl_mean_ms", 20.0)]
    assert rec["feasible"] and rec["target"] == {"load": 1.0, "load_kind": "rate", "rate_rps": 2.0}
    assert rec["verdict"].startswith("At ×1 (2.00 req/s) on 16 GPUs") and "run A" in rec["verdict"]
    json.dumps(rec, allow_nan=False)                      # valid JSON: no NaN anywhere


def test_fewest_gpus_scales_from_the_highest_load_met():
    rec = recommend(POINTS, OBJ, gpu_budget=16)
    # B meets up to ×4 on 16 GPUs → ×1 needs 4; A only up to ×1 → 16
    assert _at(rec, 1.0)["fewest_gpus"] == {"config": "B", "gpus": 4, "max_load": 4.0, "extrapolated": False}
    assert _at(rec, 4.0)["fewest_gpus"]["gpus"] == 16
    # TP4 workers: whole workers only (ceil to 4 GPUs)
    tp4 = POINTS.assign(tp=4, workers=4)
    rec8 = recommend(pd.concat([tp4, tp4.assign(load=8.0)]).reset_index(drop=True), Objectives(), gpu_budget=16)
    assert _at(rec8, 1.0)["fewest_gpus"]["gpus"] == 4     # 16 × 1/8 = 2 GPUs → one 4-GPU worker


def test_margin_interval_with_repeats():
    pts = pd.DataFrame([_pt("A", 1.0, 100.0, 400.0, 20.0, ci=3.0, repeats=3),
                        _pt("B", 1.0, 98.0, 300.0, 18.0, ci=4.0, repeats=3)])
    m = _at(recommend(pts, OBJ, gpu_budget=16), 1.0)["margin"]
    assert m["ci"] == pytest.approx(5.0) and m["significant"] is False      # 2 < √(3² + 4²)


def test_nothing_meets_names_the_closest_and_what_they_missed():
    rec = recommend(POINTS, Objectives(ttft_p90_ms=50, itl_mean_ms=50), gpu_budget=16)
    one = _at(rec, 1.0)
    assert not rec["feasible"] and one["best"] is None and one["fewest_gpus"] is None
    assert [c["config"] for c in one["closest"]] == ["B", "A", "C"]          # 300 ms is the nearest miss
    assert one["closest"][0]["missed"][0]["value"] == 300.0 and "figures" in one["closest"][0]
    assert rec["verdict"].startswith("Nothing meeting TTFT p90 ≤ 50 ms, ITL mean ≤ 50 ms at ×1")
    assert "Closest: B (TTFT p90 300 ms > 50 (+500%))" in rec["verdict"]
    assert EXIT_NOTHING_MEETS == 4


def test_objectives_drive_goodput_and_the_target_load_is_swept():
    spec = SweepSpec(gpu_budget=4, objectives={"ttft_p90_ms": 2000, "itl_p90_ms": 40, "e2e_p90_ms": 9000,
                                               "target_load": 3})
    assert 3.0 in spec.arrival_speedups
    slo = spec.objectives.slo()
    assert (slo.ttft_ms, slo.itl_ms, slo.e2e_ms) == (2000, 40, 9000)
    with pytest.raises(ValidationError, match="one ITL objective"):
        Objectives(itl_mean_ms=50, itl_p90_ms=60)
    with pytest.raises(ValidationError, match="objectives .* or slo, not both"):
        SweepSpec(objectives={"ttft_p90_ms": 1}, slo={"ttft_ms": 2})
    assert Objectives().slo() is None and not Objectives().any


def test_a_near_tie_goes_to_the_deployment_with_more_headroom():
    """Within 2% on tokens/s/GPU, the deployment that meets the objectives up to a higher load wins."""
    pts = POINTS.copy()
    pts.loc[(pts["config"] == "B") & (pts["load"] == 1.0), "output_tps_per_gpu"] = 99.0   # 1% behind A
    one = _at(recommend(pts, OBJ, gpu_budget=16), 1.0)
    assert one["best"]["config"] == "B" and one["best_max_load"] == 4.0        # B meets up to ×4, A only ×1
    assert one["runner_up"]["config"] == "A" and one["margin"]["ratio"] == pytest.approx(-0.01)
    rec = recommend(pts, OBJ, gpu_budget=16)
    assert "near tie" in rec["verdict"] and "B wins on headroom: it meets the objectives up to ×4" in rec["verdict"]
