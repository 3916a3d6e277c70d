"""Timing models: Dynamo's polynomial, measured tables (interpolated), and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import drive, make_request, poly_decode, poly_prefill
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.engines.mocker.timing import (
    InterpolatedTiming,
    PolynomialTiming,
    bundled_profile,
    make_timing,
)

PROFILE = "h200_llama3.1-8b-fp8_vllm"


# ---------------------------------------------------------------------------
# polynomial


def test_polynomial_prefill_sample_values():
    p = PolynomialTiming()
    assert p.prefill_ms(1, 512, 0) == pytest.approx(24.385704, abs=5e-7)
    assert p.prefill_ms(2, 4096, 0) == pytest.approx(169.136918, abs=5e-7)  # T = 8192
    assert p.prefill_ms(1, 128, 0) == pytest.approx(18.451798, abs=5e-7)
    for t in (1, 64, 1808, 8192, 20000):
        assert p.prefill_ms(1, t, 0) == pytest.approx(poly_prefill(t), rel=1e-15)


def test_polynomial_prefill_counts_new_tokens_only():
    p = PolynomialTiming()
    # T = batch * (mean_isl - mean_prefix)
    assert p.prefill_ms(3, 1000, 400) == p.prefill_ms(1, 1800, 0)
    assert p.prefill_ms(2, 256, 192) == p.prefill_ms(1, 128, 0)
    assert p.prefill_ms(1, 512, 512) == 0.0
    assert p.prefill_ms(0, 0, 0) == 0.0


def test_polynomial_decode_values_clamp_and_floor():
    p = PolynomialTiming()
    total = 16384 * 64
    assert p.decode_ms(513, 513, total) == pytest.approx(5.766417, abs=5e-7)
    assert p.decode_ms(0, 0, total) == pytest.approx(5.74)
    full = -25.74 + 54.01 + 5.74
    assert p.decode_ms(total, 100, total) == pytest.approx(full)
    # utilisation is clamped at 1: more context than the cache holds costs the same as a full cache
    assert p.decode_ms(5 * total, 100, total) == p.decode_ms(total, 100, total)
    assert p.decode_ms(10, 10, 0) == pytest.approx(5.74)  # no KV tokens: p = 0
    for a in (1, 1000, 300_000, 1_048_576):
        assert p.decode_ms(a, 1.0, total) == pytest.approx(poly_decode(a, total), rel=1e-15)
    # the 1 ms floor binds for a fit that would go below it
    low = PolynomialTiming(decode_coeffs=(0.0, -10.0, 2.0))
    assert low.decode_ms(total, 1.0, total) == 1.0
    assert low.decode_ms(0, 1.0, total) == 2.0


def test_polynomial_decode_vec_equals_scalar():
    p = PolynomialTiming()
    low = PolynomialTiming(decode_coeffs=(0.0, -10.0, 2.0))
    total = 640
    active = np.array([0, 1, 64, 257, 500, 640, 641, 5000], dtype=np.float64)
    ctx = active / 3
    for model in (p, low):
        vec = model.decode_ms_vec(active, ctx, total)
        scal = [model.decode_ms(int(a), c, total) for a, c in zip(active, ctx)]
        assert vec.tolist() == scal  # bit-identical, so fast-forward stretches match stepping
    assert p.decode_ms_vec(active, ctx, 0).tolist() == [p.decode_ms(int(a), 0, 0) for a in active]


# ---------------------------------------------------------------------------
# interpolated


@pytest.fixture(scope="module")
def table():
    return yaml.safe_load(bundled_profile(PROFILE).read_text())


@pytest.fixture(scope="module")
def interp():
    return make_timing("interpolated", PROFILE)


def test_bundled_profile_is_found_by_name_and_by_path(interp):
    path = bundled_profile(PROFILE)
    assert path.name == PROFILE + ".yaml" and path.exists()
    by_path = make_timing("interpolated", str(path))
    assert isinstance(interp, InterpolatedTiming) and interp.name == "interpolated"
    assert by_path.prefill_ms(1, 3000, 0) == interp.prefill_ms(1, 3000, 0)


def test_interpolated_prefill_exact_at_table_points_linear_between(interp, table):
    xs, ys = table["prefill"]["new_tokens"], table["prefill"]["ms"]
    for x, y in zip(xs, ys):
        assert interp.prefill_ms(1, x, 0) == pytest.approx(y, abs=1e-12)
    # T = batch * (mean_isl - mean_prefix), as the polynomial
    assert xs[2] % 2 == 0
    assert interp.prefill_ms(2, xs[2], xs[2] // 2) == pytest.approx(ys[2], abs=1e-12)
    mid = (xs[2] + xs[3]) / 2
    assert interp.prefill_ms(1, mid, 0) == pytest.approx((ys[2] + ys[3]) / 2, abs=1e-9)
    # linear extrapolation from the end segments
    slope_hi = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    assert interp.prefill_ms(1, xs[-1] + 1000, 0) == pytest.approx(ys[-1] + 1000 * slope_hi, abs=1e-9)
    slope_lo = (ys[1] - ys[0]) / (xs[1] - xs[0])
    assert interp.prefill_ms(1, 50, 0) == pytest.approx(ys[0] - 50 * slope_lo, abs=1e-9)
    assert interp.prefill_ms(1, 64, 64) == 0.0


def test_interpolated_decode_bilinear_exact_at_grid_points(interp, table):
    kv, ctx, itl = (table["decode"][k] for k in ("active_kv_tokens", "context_length", "itl_ms"))
    for i, a in enumerate(kv):
        for j, c in enumerate(ctx):
            assert interp.decode_ms(a, c, 10**6) == pytest.approx(itl[i][j], abs=1e-12)
    # halfway in both axes: the mean of the four corners
    a = (kv[1] + kv[2]) / 2
    c = (ctx[1] + ctx[2]) / 2
    corners = (itl[1][1] + itl[1][2] + itl[2][1] + itl[2][2]) / 4
    assert interp.decode_ms(a, c, 10**6) == pytest.approx(corners, abs=1e-9)
    # beyond the last KV row: linear extrapolation along the column
    step = kv[-1] - kv[-2]
    expect = itl[-1][1] + (itl[-1][1] - itl[-2][1])
    assert expect != itl[-1][1]
    assert interp.decode_ms(kv[-1] + step, ctx[1], 10**6) == pytest.approx(expect, abs=1e-9)
    # the floor still applies
    assert interp.decode_ms(0, ctx[0], 10**6) >= 1.0


def test_interpolated_decode_vec_equals_scalar(interp):
    active = np.array([0.0, 5_000, 127_579, 300_000, 950_000, 2_000_000])
    ctx = np.array([100.0, 350, 3000, 9000, 13585, 20000])
    assert interp.decode_ms_vec(active, ctx, 945029).tolist() == [
        interp.decode_ms(float(a), float(c), 945029) for a, c in zip(active, ctx)]


def test_single_context_column_profile_interpolates_on_kv_only(tmp_path):
    prof = {"prefill": {"new_tokens": [0, 1000], "ms": [10.0, 20.0]},
            "decode": {"active_kv_tokens": [0, 1000], "context_length": [512], "itl_ms": [[2.0], [4.0]]}}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(prof))
    t = make_timing("interpolated", str(path))
    assert t.decode_ms(500, 99999, 0) == pytest.approx(3.0)
    assert t.decode_ms(2000, 1, 0) == pytest.approx(6.0)
    assert t.prefill_ms(1, 250, 0) == pytest.approx(12.5)


def test_npz_profile_with_dynamo_keys(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, prefill_isl=[100, 200], prefill_ttft_ms=[10, 30], decode_active_kv_tokens=[0, 100],
             decode_context_length=[10, 20], decode_itl=[[1, 2], [3, 4]])
    t = InterpolatedTiming.from_file(path)
    assert t.prefill_ms(1, 150, 0) == pytest.approx(20.0)
    assert t.decode_ms(50, 15, 0) == pytest.approx(2.5)
    bad = tmp_path / "bad.npz"
    np.savez(bad, prefill_isl=[1, 2])
    with pytest.raises(ValueError, match="missing arrays"):
        InterpolatedTiming.from_file(bad)


def test_scheduler_uses_the_interpolated_model():
    args = MockerArgs(timing="interpolated", timing_profile=PROFILE)
    s = VllmScheduler(args)
    assert s.timing.name == "interpolated"
    d = drive(s, [(0.0, make_request(0, 1117, 2, 64))])
    assert d.first(0) == pytest.approx(38.5, abs=1e-6)  # a table point of the profile


# ---------------------------------------------------------------------------
# errors


GOOD = {"prefill": {"new_tokens": [1, 2, 3], "ms": [1.0, 2.0, 3.0]},
        "decode": {"active_kv_tokens": [0, 10], "context_length": [1, 2], "itl_ms": [[1, 2], [3, 4]]}}


def write(tmp_path, prof, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(prof))
    return str(path)


def test_good_profile_loads(tmp_path):
    t = make_timing("interpolated", write(tmp_path, GOOD))
    assert t.prefill_ms(1, 2, 0) == 2.0


@pytest.mark.parametrize("drop", ["prefill", "decode"])
def test_profile_missing_section_is_a_clear_error(tmp_path, drop):
    prof = {k: v for k, v in GOOD.items() if k != drop}
    with pytest.raises(ValueError, match=r"expected prefill\.\{new_tokens,ms\}.*decode"):
        make_timing("interpolated", write(tmp_path, prof))


def test_profile_missing_key_is_a_clear_error(tmp_path):
    prof = {"prefill": {"new_tokens": [1, 2]}, "decode": GOOD["decode"]}
    with pytest.raises(ValueError, match="'ms'"):
        make_timing("interpolated", write(tmp_path, prof))


@pytest.mark.parametrize("section, key, values, axis", [
    ("prefill", "new_tokens", [1, 3, 2], "prefill.new_tokens"),
    ("prefill", "new_tokens", [1, 1, 2], "prefill.new_tokens"),
    ("decode", "active_kv_tokens", [10, 0], "decode.active_kv_tokens"),
    ("decode", "context_length", [2, 2], "decode.context_length"),
])
def test_non_increasing_axis_is_rejected(tmp_path, section, key, values, axis):
    prof = json.loads(json.dumps(GOOD))
    prof[section][key] = values
    with pytest.raises(ValueError, match=axis.replace(".", r"\.") + ".*strictly increasing"):
        make_timing("interpolated", write(tmp_path, prof))


def test_empty_axis_is_rejected(tmp_path):
    prof = json.loads(json.dumps(GOOD))
    prof["prefill"]["new_tokens"] = []
    prof["prefill"]["ms"] = []
    with pytest.raises(ValueError, match="non-empty"):
        make_timing("interpolated", write(tmp_path, prof))


def test_wrong_decode_table_shape_is_rejected(tmp_path):
    prof = json.loads(json.dumps(GOOD))
    prof["decode"]["itl_ms"] = [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match=r"shape \(2, 2\), got \(2, 3\)"):
        make_timing("interpolated", write(tmp_path, prof))


def test_missing_profile_and_unknown_names():
    with pytest.raises(ValueError, match="unknown timing model 'roofline-x'.*interpolated.*polynomial"):
        make_timing("roofline-x")
    with pytest.raises(ValueError, match="needs a profile"):
        make_timing("interpolated")
    with pytest.raises(FileNotFoundError, match="no bundled profile named 'nope'"):
        make_timing("interpolated", "nope")
    with pytest.raises(FileNotFoundError, match="not found"):
        make_timing("interpolated", "/nonexistent/profile.yaml")
    with pytest.raises(ValueError, match="unknown timing model"):
        VllmScheduler(MockerArgs(timing="bogus"))
