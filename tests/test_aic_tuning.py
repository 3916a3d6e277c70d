"""A measured profile folded into the database model (``dynosim.hardware.tuning``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from dynosim.hardware.aic import AicTiming, aic_timing
from dynosim.hardware.spec import HardwareSpec
from dynosim.hardware.tuning import (MAX_SLOWER, MIN_FASTER, TuningReport, hardware_section, measured_passes,
                                     profile_error, profile_hardware, profile_iterations, tune_aic_timing,
                                     tuned_aic_timing)

PROFILE = "h200_llama3.1-8b-fp8_vllm"
PROFILE_PATH = Path(__file__).resolve().parents[1] / "dynosim" / "profiles" / f"{PROFILE}.yaml"
HW = HardwareSpec(model="meta-llama/Meta-Llama-3.1-8B", system="h200_sxm", weight_quant="fp8", kv_quant="fp8")


def usable_entries(raw: dict) -> tuple[int, int, int, int, int]:
    """(prefill rows, decode cells, largest prefill, largest batch, largest kv), counted independently."""
    pre = sum(1 for t, m in zip(raw["prefill"]["new_tokens"], raw["prefill"]["ms"]) if t >= 1 and m > 0)
    dec, big_b, big_kv = 0, 0, 0
    for kv, row in zip(raw["decode"]["active_kv_tokens"], raw["decode"]["itl_ms"]):
        for ctx, m in zip(raw["decode"]["context_length"], row):
            if m is not None and math.isfinite(m) and m > 0 and round(kv / ctx) >= 1:
                dec += 1
                big_b, big_kv = max(big_b, round(kv / ctx)), max(big_kv, kv)
    return pre, dec, max(raw["prefill"]["new_tokens"]), big_b, big_kv


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PROFILE_PATH.read_text())


@pytest.fixture(scope="module")
def tuned() -> tuple[AicTiming, TuningReport]:
    return tune_aic_timing(HW, PROFILE)


@pytest.fixture(scope="module")
def untuned() -> AicTiming:
    return AicTiming(HW)  # its own model, not the shared cache


# ---------------------------------------------------------------------------------------------------------------
# the profile as iterations


def test_iterations_are_the_usable_table_entries(raw):
    pre, dec, *_ = usable_entries(raw)
    assert (pre, dec) == (8, 20)  # the kv = 0 row has no request
    its = profile_iterations(PROFILE)
    assert len(its) == pre + dec
    assert len(profile_iterations(PROFILE_PATH)) == len(its)  # path and bundled name agree
    for it in its:
        assert it["wall_time"] > 0
        s = it["scheduled_requests"]
        assert (s["num_prefill_requests"] > 0) != (s["num_decode_requests"] > 0)  # prefill-only or decode-only
    # wall_time is in seconds (tune_with_fpms's unit): the first prefill row's ms / 1000
    first = its[0]
    assert first["scheduled_requests"]["num_prefill_requests"] == 1
    assert first["scheduled_requests"]["sum_prefill_tokens"] == raw["prefill"]["new_tokens"][0]
    assert first["wall_time"] == pytest.approx(raw["prefill"]["ms"][0] / 1000)
    # a decode cell: batch = round(kv / ctx), summed KV as measured
    kv, ctx = raw["decode"]["active_kv_tokens"][1], raw["decode"]["context_length"][0]
    d = its[pre]["scheduled_requests"]
    assert (d["num_decode_requests"], d["sum_decode_kv_tokens"]) == (round(kv / ctx), kv)
    assert its[pre]["wall_time"] == pytest.approx(raw["decode"]["itl_ms"][1][0] / 1000)


def test_unusable_cells_are_skipped():
    prof = {"name": "holes",
            "prefill": {"new_tokens": [0, 128, 256], "ms": [1.0, float("nan"), 12.0]},
            "decode": {"active_kv_tokens": [0, 1000, 4000], "context_length": [500, 3000],
                       "itl_ms": [[5.0, 5.0], [6.0, None], [float("inf"), 8.0]]}}
    passes = measured_passes(prof)
    assert [(p.kind, p.shape, p.ms) for p in passes] == [
        ("prefill", (1, 256, 0, 0), 12.0),
        ("decode", (0, 0, 2, 1000), 6.0),   # 1000 / 3000 rounds to 0 requests: skipped; inf skipped
        ("decode", (0, 0, 1, 4000), 8.0),
    ]


def test_no_usable_rows_is_a_clear_error():
    empty = {"name": "empty", "prefill": {"new_tokens": [0], "ms": [3.0]},
             "decode": {"active_kv_tokens": [0, 10], "context_length": [100], "itl_ms": [[4.0], [4.0]]}}
    assert profile_iterations(empty) == []
    with pytest.raises(ValueError, match=r"profile empty: no usable measured pass"):
        tune_aic_timing(HW, empty)
    with pytest.raises(ValueError, match=r"profile bare: no usable"):
        tuned_aic_timing(HW, {"name": "bare"})


def test_malformed_tables_name_the_profile():
    bad = {"name": "ragged", "prefill": {"new_tokens": [1, 2], "ms": [1.0]}}
    with pytest.raises(ValueError, match=r"profile ragged: prefill.new_tokens has 2 entries, prefill.ms 1"):
        measured_passes(bad)
    bad = {"name": "ragged", "decode": {"active_kv_tokens": [100], "context_length": [10, 20], "itl_ms": [[1.0]]}}
    with pytest.raises(ValueError, match=r"profile ragged: decode.itl_ms row 0 must have 2 entries"):
        measured_passes(bad)


# ---------------------------------------------------------------------------------------------------------------
# tuning against the bundled profile


def test_tuned_prices_are_closer_to_the_measurements(tuned, untuned):
    timing, _ = tuned
    before, after = profile_error(untuned, PROFILE), profile_error(timing, PROFILE)
    for kind in ("prefill", "decode", "all"):
        assert after[kind] < before[kind], (kind, before, after)
    # the database alone is far off this engine (~30%); with the measurements folded in, within ~10%
    assert before["all"] > 0.2
    assert after["prefill"] < 0.1 and after["decode"] < 0.1


def test_report_and_corrections(tuned, raw):
    timing, report = tuned
    pre, dec, big_tokens, big_batch, big_kv = usable_entries(raw)
    assert (report.iterations, report.prefill_iterations, report.decode_iterations) == (pre + dec, pre, dec)
    assert report.profile == PROFILE
    assert timing.source == report.source == f"aic+tuned:{PROFILE}"
    assert timing.model.diagnostics()["source"] == "aic_with_correction"
    assert timing.model.diagnostics()["retained_observations"] == pre + dec
    for c in (report.min_correction, report.avg_correction, report.max_correction):
        assert c is not None and MIN_FASTER <= c <= MAX_SLOWER
    assert report.min_correction <= report.avg_correction <= report.max_correction
    assert report.avg_correction > 1.0  # the database is optimistic for this engine
    opts = report.options
    assert opts["max_num_tokens"] >= big_tokens
    assert opts["max_batch_size"] >= big_batch
    assert opts["max_kv_tokens"] >= big_kv
    assert (opts["min_faster_correction_factor"], opts["max_slower_correction_factor"]) == (MIN_FASTER, MAX_SLOWER)
    assert "measured passes" in report.summary()


def test_tuned_timing_serves_the_scheduler_interface(tuned, raw):
    timing, _ = tuned
    n, ms = raw["prefill"]["new_tokens"][3], raw["prefill"]["ms"][3]
    assert timing.prefill_ms(1, n, 0) == pytest.approx(ms, rel=0.1)
    kv, ctx = raw["decode"]["active_kv_tokens"][3], raw["decode"]["context_length"][2]
    b = round(kv / ctx)
    assert timing.decode_ms(kv, kv / b, kv) == pytest.approx(raw["decode"]["itl_ms"][3][2], rel=0.15)


def test_tuning_leaves_the_shared_cache_alone(tuned):
    shared = aic_timing(HW)
    assert shared.source == "aic"
    assert shared.model is not tuned[0].model
    assert shared.model.diagnostics()["source"] == "aic"
    assert shared.model.get_avg_correction_factor() is None


def test_tighter_bounds_bind():
    _, report = tune_aic_timing(HW, PROFILE, min_faster=0.9, max_slower=1.1)
    assert 0.9 <= report.min_correction <= report.max_correction <= 1.1


# ---------------------------------------------------------------------------------------------------------------
# the hardware a profile was measured on


def test_profile_hardware_round_trips(tmp_path, raw):
    assert profile_hardware(PROFILE) is None  # a free-text label ("H200 SXM, TP1"), not a mapping
    assert profile_hardware({"prefill": {}}) is None
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**raw, "hardware": hardware_section(HW)}))
    assert profile_hardware(path) == HW
    other = HardwareSpec(model="meta-llama/Meta-Llama-3.1-8B", system="h100_sxm", tp=2, backend="sglang",
                         gpu_memory_utilization=0.8)
    assert profile_hardware({"hardware": hardware_section(other)}) == other


def test_profile_hardware_errors_name_profile_and_field(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"hardware": {"model": "meta-llama/Meta-Llama-3.1-8B", "system": "h200_sxm",
                                                 "tp": 0}}))
    with pytest.raises(ValueError, match=r"profile broken: hardware\.tp: "):
        profile_hardware(path)
    with pytest.raises(ValueError, match=r"profile broken2: hardware\.gpus: "):
        profile_hardware({"name": "broken2", "hardware": {"model": "meta-llama/Meta-Llama-3.1-8B",
                                                          "system": "h200_sxm", "gpus": 8}})
    with pytest.raises(ValueError, match=r"profile broken3: hardware: .*h999"):
        profile_hardware({"name": "broken3", "hardware": {"model": "meta-llama/Meta-Llama-3.1-8B",
                                                          "system": "h999"}})
    with pytest.raises(ValueError, match=r"profile broken4: hardware must be a mapping"):
        profile_hardware({"name": "broken4", "hardware": ["h200_sxm"]})


def test_hardware_from_the_profile_when_none_is_given(raw):
    prof = {**raw, "name": "with-hw", "hardware": hardware_section(HW)}
    timing, report = tune_aic_timing(None, prof)
    assert timing.hw == HW and report.source == "aic+tuned:with-hw"
    with pytest.raises(ValueError, match=r"profile .*: no hardware given"):
        tune_aic_timing(None, PROFILE)


def test_fold_into_database_records_the_hardware_and_lowers_the_error(tmp_path):
    import shutil

    import yaml

    from dynosim.engines.mocker.timing import resolve_profile
    from dynosim.hardware.tuning import fold_into_database, profile_hardware

    prof = tmp_path / "h200.yaml"
    shutil.copy(resolve_profile("h200_llama3.1-8b-fp8_vllm"), prof)
    hw = HardwareSpec(model="meta-llama/Meta-Llama-3.1-8B", system="h200_sxm", weight_quant="fp8", kv_quant="fp8")
    report, before, after = fold_into_database(prof, hw)
    raw = yaml.safe_load(prof.read_text())
    assert raw["hardware"]["system"] == "h200_sxm" and isinstance(raw["hardware_note"], str)
    assert profile_hardware(prof) == hw
    assert after["all"] < before["all"] and report.iterations > 0
