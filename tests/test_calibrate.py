"""`dynosim calibrate` library: measure pass timings of a (fake) live engine, write a profile the simulator loads.

The fake server scripts prefill as ``ttft + per-token * prompt`` and the
decode step as a function of the running batch's KV tokens; the calibration
must recover them. Tolerances are loose (asyncio jitter on a shared CI box)
but a measurement that looked at the wrong thing (whole-request ITL, staggered
windows, wrong KV accounting) falls outside them.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from dynosim.engines.live.metrics import info_labels, parse_prometheus
from dynosim.engines.mocker.timing import (
    DECODE_COEFFS,
    PREFILL_COEFFS,
    InterpolatedTiming,
    PolynomialTiming,
    make_timing,
    profile_engine_args,
)
from dynosim.validate.calibrate import (
    CalibrationError,
    CalibrationPlan,
    PrefillBatchPoint,
    calibrate,
    decode_window,
    fit_bursts,
    resample_columns,
    write_profile,
)
from live.fake_server import FakeOpenAIServer, Script, free_port

MODEL = "fake-model"
TTFT, PER_TOKEN = 15.0, 0.06            # prefill: 15 ms + 0.06 ms per new token
HTTP_MS = 2.0                           # about what a local round trip adds to the client TTFT


def step_ms(running: int, kv: int) -> float:
    return 4.0 + kv / 200.0               # decode step grows with the batch's KV tokens


PLAN = CalibrationPlan(prefill_lengths=(32, 256, 1024), prefill_repeats=5, prefill_batches=(1, 3),
                       prefill_batch_repeats=1, decode_batches=(1, 2, 6),
                       decode_contexts=(64, 384), decode_tokens=16, decode_repeats=1, min_window_steps=6)


def run(coro):
    return asyncio.run(coro)


def script(**kw) -> Script:
    base = dict(ttft_ms=TTFT, prefill_ms_per_token=PER_TOKEN, decode_step_ms=step_ms, block_size=32,
                num_gpu_blocks=4096)
    return Script(**{**base, **kw})


async def calibrate_fake(sc: Script, plan: CalibrationPlan = PLAN, faults=(), **kw):
    msgs: list[str] = []
    async with FakeOpenAIServer(script=sc) as srv:
        for mode, count in faults:
            srv.inject(mode, count=count)
        res = await calibrate(srv.base_url, MODEL, plan, progress=msgs.append, request_timeout_s=10,
                              connect_timeout_s=2, **kw)
    return srv, res, msgs


@pytest.fixture(scope="module")
def calibrated():
    return run(calibrate_fake(script(), hardware="fake box"))


# ---------------------------------------------------------------------------- measurement


def test_recovers_prefill_line(calibrated):
    srv, res, _ = calibrated
    tok, ms = res.prefill_client_table()
    assert tok.tolist() == [32, 256, 1024]
    eng_tok, eng_ms = res.prefill_table()   # engine pass time: the client TTFT less the fixed client latency
    assert np.allclose(eng_ms, ms - res.client_latency_ms()) and 0 < res.client_latency_ms() < TTFT + 4 * HTTP_MS
    assert all(len(p.ttft_ms) == 5 for p in res.prefill)
    slope, intercept = np.polyfit(tok, ms, 1)
    assert slope == pytest.approx(PER_TOKEN, rel=0.25)
    assert TTFT * 0.8 <= intercept <= TTFT + 4 * HTTP_MS   # plus the HTTP round trip
    # every prefill request was unique (no prefix-cache hit) and asked for one token
    bodies = [r["body"] for r in srv.requests]
    assert srv.counters["prefix_cache_hits"] == 0
    assert len({tuple(b["prompt"]) for b in bodies}) == len(bodies)
    assert all(4 <= t < 2048 for b in bodies for t in b["prompt"])
    # 3 lengths x 5 repeats + bursts of 1 and 3 (+ warm-up with more)
    assert sum(1 for b in bodies if b["max_tokens"] == 1) == 15 + 4


def test_recovers_decode_steps(calibrated):
    _, res, _ = calibrated
    assert [(p.batch, p.context) for p in res.decode] == [(b, c) for b in (1, 2, 6) for c in (64, 384)]
    for p in res.decode:
        assert len(p.samples) == 1
        s = p.samples[0]
        # active KV at mid-window: batch x (context + about half the tokens; more if the batch was rerun)
        assert s.max_tokens >= 16
        assert p.batch * (p.context + 0.2 * s.max_tokens) <= s.active_kv_tokens <= p.batch * (p.context + 0.8 * s.max_tokens)
        assert s.mean_context == pytest.approx(s.active_kv_tokens / p.batch)
        assert s.window_steps >= PLAN.min_window_steps and s.window_ms > 0
        assert p.itl_ms == pytest.approx(step_ms(p.batch, p.active_kv_tokens), rel=0.3), (p.batch, p.context)
    big = next(p for p in res.decode if (p.batch, p.context) == (6, 384))
    small = next(p for p in res.decode if (p.batch, p.context) == (1, 64))
    assert big.itl_ms > 2.5 * small.itl_ms


def test_engine_cache_config_from_metrics(calibrated):
    _, res, msgs = calibrated
    assert (res.block_size, res.num_gpu_blocks, res.max_kv_tokens) == (32, 4096, 32 * 4096)
    assert "vllm:cache_config_info" in res.engine_source
    assert res.cache_config["num_cpu_blocks"] == "None" and res.max_model_len == 2048
    assert any(m.startswith("prefill 15/15") for m in msgs) and any(m.startswith("decode 6/6") for m in msgs)
    assert any("warm-up" in m for m in msgs)


# ---------------------------------------------------------------------------- the profile


def test_profile_loads_as_interpolated_and_reproduces_measurements(calibrated, tmp_path):
    _, res, _ = calibrated
    path = write_profile(res, tmp_path / "prof.yaml")
    raw = yaml.safe_load(path.read_text())
    assert path.read_text().startswith("# Timing profile measured by `dynosim calibrate`")
    assert raw["model"] == MODEL and raw["hardware"] == "fake box" and raw["source"] == res.source
    assert raw["engine"]["block_size"] == 32 and raw["engine"]["num_gpu_blocks"] == 4096
    assert raw["engine"]["max_kv_tokens"] == 32 * 4096
    assert len(raw["raw"]["prefill"]) == 3 and len(raw["raw"]["decode"]) == 6
    # the fixed cost of a pass: a single stream's decode step (capped by the smallest prefill pass)
    assert raw["decode"]["pass_overhead_ms"] == pytest.approx(
        min(res.pass_overhead_ms(), raw["prefill"]["ms"][0]), abs=1e-3) and raw["decode"]["pass_overhead_ms"] > 0
    assert "T" in raw["calibrated_at"]
    assert profile_engine_args(path) == {"block_size": 32, "num_gpu_blocks": 4096,
                                         "admit_interval_ms": raw["engine"]["admit_interval_ms"],
                                         "client_latency_ms": raw["engine"]["client_latency_ms"]}

    t = make_timing("interpolated", str(path))
    assert isinstance(t, InterpolatedTiming)
    lat = raw["engine"]["client_latency_ms"]   # a lone prompt's client TTFT = its pass + the client latency
    assert t.prefill_ms(1, 512, 0) + lat == pytest.approx(TTFT + HTTP_MS + PER_TOKEN * 512, rel=0.25)
    assert t.prefill_ms(1, 512, 512) == 0.0
    kv, ctx = raw["decode"]["active_kv_tokens"], raw["decode"]["context_length"]
    assert len(ctx) == 2 and 64 < ctx[0] < 80 and 384 < ctx[1] < 400
    assert np.shape(raw["decode"]["itl_ms"]) == (len(kv), 2)
    assert all(b > a for a, b in zip(kv, kv[1:]))
    for j, c in enumerate((64, 384)):           # each column reproduces its own points
        for p in (p for p in res.decode if p.context == c):
            assert t.decode_ms(p.active_kv_tokens, ctx[j], 0) == pytest.approx(p.itl_ms, rel=0.02, abs=0.01)
    # and predicts the scripted step between them
    assert t.decode_ms(1500, 200, 0) == pytest.approx(step_ms(0, 1500), rel=0.3)


def test_profile_loads_as_polynomial(calibrated, tmp_path):
    _, res, _ = calibrated
    path = write_profile(res, tmp_path / "prof.yml")
    raw = yaml.safe_load(path.read_text())
    t = make_timing("polynomial", str(path))
    assert isinstance(t, PolynomialTiming)
    assert list(t.prefill_coeffs) == raw["polynomial"]["prefill_coeffs"]
    assert list(t.decode_coeffs) == raw["polynomial"]["decode_coeffs"]
    lat = raw["engine"]["client_latency_ms"]   # a lone prompt's client TTFT = its pass + the client latency
    assert t.prefill_ms(1, 512, 0) + lat == pytest.approx(TTFT + HTTP_MS + PER_TOKEN * 512, rel=0.25)
    total = 32 * 4096
    # the scripted step is linear in KV tokens, hence in utilisation: the quadratic recovers it
    for kv in (200, 1500, 2500):
        assert t.decode_ms(kv, 100, total) == pytest.approx(step_ms(0, kv), rel=0.3)
    # the fit is the least-squares quadratic of the raw points (compared where it was fitted)
    pts = np.array([(d["active_kv_tokens"] / total, d["itl_ms"]) for d in raw["raw"]["decode"]])
    refit = np.polyfit(pts[:, 0], pts[:, 1], 2)
    assert np.allclose(np.polyval(refit, pts[:, 0]), np.polyval(t.decode_coeffs, pts[:, 0]), rtol=1e-3)


def test_profile_as_json(calibrated, tmp_path):
    _, res, _ = calibrated
    path = write_profile(res, tmp_path / "prof.json")
    assert json.loads(path.read_text())["engine"]["num_gpu_blocks"] == 4096
    assert isinstance(make_timing("interpolated", str(path)), InterpolatedTiming)
    with pytest.raises(ValueError, match="must end in"):
        write_profile(res, tmp_path / "prof.npz")


def test_without_cache_config_the_profile_says_so_and_given_values_win(tmp_path):
    plan = CalibrationPlan.quick(prefill_lengths=(32, 128), decode_batches=(1, 2), decode_contexts=(64,),
                                 decode_tokens=10, decode_repeats=1, min_window_steps=4)
    _, res, msgs = run(calibrate_fake(script(num_gpu_blocks=None), plan))
    assert res.block_size is None and res.num_gpu_blocks is None and res.engine_source is None
    prof = res.to_profile_dict()
    assert "block_size" not in prof["engine"] and "not expose" in prof["engine"]["note"]
    assert "decode_coeffs" not in prof["polynomial"] and "prefill_coeffs" in prof["polynomial"]
    assert any("KV capacity unknown" in m for m in msgs)
    path = write_profile(res, tmp_path / "p.yaml")
    assert set(profile_engine_args(path)) <= {"admit_interval_ms", "client_latency_ms"}   # no KV capacity
    t = make_timing("polynomial", str(path))
    assert t.decode_coeffs == DECODE_COEFFS and t.prefill_coeffs != PREFILL_COEFFS

    _, res2, _ = run(calibrate_fake(script(num_gpu_blocks=None), plan, block_size=16, num_gpu_blocks=1000))
    assert (res2.block_size, res2.num_gpu_blocks, res2.engine_source) == (16, 1000, "given")
    assert res2.to_profile_dict()["engine"]["max_kv_tokens"] == 16000


def test_decode_point_beyond_kv_cache_is_skipped():
    plan = CalibrationPlan.quick(prefill_lengths=(32,), decode_batches=(1, 4), decode_contexts=(64,),
                                 decode_tokens=10, decode_repeats=1, min_window_steps=4)
    _, res, msgs = run(calibrate_fake(script(num_gpu_blocks=6), plan))   # 192 tokens: 4 x 74 does not fit
    assert [(s["batch"], s["context"]) for s in res.skipped] == [(4, 64)]
    assert "KV cache" in res.skipped[0]["reason"]
    assert [p.batch for p in res.decode if p.samples] == [1]
    assert res.to_profile_dict()["raw"]["skipped"][0]["batch"] == 4


def test_batch_that_never_runs_together_is_rerun_then_skipped():
    plan = CalibrationPlan.quick(prefill_lengths=(32,), decode_batches=(1, 4), decode_contexts=(64,),
                                 decode_tokens=8, decode_repeats=1, min_window_steps=4, max_decode_tokens=40)
    sc = script(max_running=2, decode_step_ms=lambda n, kv: 1.0)
    _, res, msgs = run(calibrate_fake(sc, plan))
    assert any("rerunning with max_tokens" in m for m in msgs)
    assert [(s["batch"], s["context"]) for s in res.skipped] == [(4, 64)]
    assert "never all decoded at once" in res.skipped[0]["reason"]
    assert [p.batch for p in res.decode if p.samples] == [1]


# ---------------------------------------------------------------------------- failures


def test_failed_request_is_retried_once():
    plan = CalibrationPlan.quick(prefill_lengths=(32,), prefill_repeats=1, prefill_batches=(1,),
                                 prefill_batch_repeats=1, decode_batches=(1,), decode_contexts=(64,),
                                 decode_tokens=8, decode_repeats=1, min_window_steps=4)
    srv, res, _ = run(calibrate_fake(script(), plan, faults=[("http500", 1)]))
    assert [r["fault"] for r in srv.requests][:2] == ["http500", None]
    assert len(srv.requests) == 5   # warm-up twice, one prefill, one burst of one, one decode stream
    assert res.prefill[0].ttft_ms


def test_failing_endpoint_raises_a_clear_error():
    plan = CalibrationPlan.quick()
    with pytest.raises(CalibrationError) as ei:
        run(calibrate_fake(script(), plan, faults=[("http500", 2)]))
    msg = str(ei.value)
    assert "127.0.0.1" in msg and "/v1/completions" in msg and "failed twice" in msg
    assert "prompt 128 tokens" in msg and "max_tokens 8" in msg and "HTTP 500" in msg

    # a decode batch that keeps failing (some of its streams, both times) names its shape
    plan = CalibrationPlan.quick(prefill_lengths=(32,), prefill_repeats=1, warmup=False, decode_batches=(3,),
                                 prefill_batches=(1,), prefill_batch_repeats=1,
                                 decode_contexts=(64,), decode_tokens=8, decode_repeats=1, min_window_steps=4)

    async def failing_decode():
        async with FakeOpenAIServer(script=script()) as srv:
            def progress(msg):   # once the prefill points are in, the next streams fail
                if msg.startswith("prefill burst 1/1"):
                    srv.inject("http500", count=6)
            await calibrate(srv.base_url, MODEL, plan, progress=progress, request_timeout_s=5)

    with pytest.raises(CalibrationError, match=r"decode point batch 3 x context 64 .*3 concurrent POST "
                                               r"http://127.0.0.1:\d+/v1/completions, prompt 64 tokens each, "
                                               r"max_tokens 8\).*HTTP 500"):
        run(failing_decode())


def test_unreachable_endpoint_and_unknown_model():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CalibrationError, match=f"cannot reach the engine: GET {url}/v1/models"):
        run(calibrate(url, MODEL, CalibrationPlan.quick(), connect_timeout_s=1))

    async def other_model():
        async with FakeOpenAIServer(script=script()) as srv:
            await calibrate(srv.base_url, "llama-9000", CalibrationPlan.quick())

    with pytest.raises(CalibrationError, match=r"does not serve model 'llama-9000'.*fake-model"):
        run(other_model())


def test_plan_must_fit_the_engines_max_model_len():
    with pytest.raises(CalibrationError, match="max_model_len 512.*prefill length 1536"):
        run(calibrate_fake(script(max_model_len=512), CalibrationPlan()))


# ---------------------------------------------------------------------------- plan


@pytest.mark.parametrize("kw,match", [
    (dict(prefill_lengths=()), "prefill_lengths must not be empty"),
    (dict(decode_batches=(1, 4, 4)), "decode_batches must be strictly increasing"),
    (dict(decode_contexts=(512, 128)), "decode_contexts must be strictly increasing"),
    (dict(prefill_lengths=(0, 32)), "prefill_lengths must be positive"),
    (dict(decode_batches=(-1, 2)), "decode_batches must be positive"),
    (dict(prefill_repeats=0), "prefill_repeats"),
    (dict(decode_tokens=8, min_window_steps=8), "min_window_steps"),
    (dict(decode_tokens=600), "max_decode_tokens"),
    (dict(max_model_len=1024), "prefill length 1536"),
    (dict(prefill_lengths=(32,), max_model_len=1050), "decode context 1024 \\+ decode_tokens 48"),
    (dict(bogus=1), "bogus"),
])
def test_plan_validation(kw, match):
    with pytest.raises(ValidationError, match=match):
        CalibrationPlan(**kw)


def test_default_and_quick_plans():
    p = CalibrationPlan()
    assert p.max_model_len is None and p.n_requests() == 1 + 7 * 5 + 15 * 3 + 31 * 3 * 2
    assert 10 < p.estimate_s() < 150                       # the brief: a few minutes at most on a CPU vLLM
    assert p.with_max_model_len(2048).max_model_len == 2048
    with pytest.raises(ValidationError):
        p.with_max_model_len(1000)
    q = CalibrationPlan.quick()
    assert q.prefill_repeats == q.decode_repeats == 2 and q.n_requests() < p.n_requests() / 3
    assert CalibrationPlan.quick(decode_tokens=12).decode_tokens == 12


# ---------------------------------------------------------------------------- pieces


def test_decode_window_takes_only_the_all_running_steps():
    # A starts at 0 and decodes every 10 ms during B's prefill (mixed steps of 30 ms), B's first token at 90
    a = [0, 30, 60, 90, 100, 110, 120, 130, 140]
    b = [90, 100, 110, 120, 130, 140, 150, 160]
    w = decode_window([(a, [1] * len(a)), (b, [1] * len(b))], context=100)
    assert w["itl_ms"] == pytest.approx(10.0)
    assert w["window_ms"] == pytest.approx(50.0) and w["window_steps"] == 5 and w["gaps"] == 10
    assert w["stagger_tokens"] == 3
    # mid-window 115: A has 6 tokens, B 3
    assert w["active_kv_tokens"] == 2 * 100 + 6 + 3 and w["mean_context"] == pytest.approx(104.5)
    # a chunk of two tokens counts as two steps
    w2 = decode_window([([0, 10, 30, 40], [1, 1, 2, 1])], context=5)
    assert w2["itl_ms"] == pytest.approx(10.0) and w2["stagger_tokens"] == 0
    # chunks that arrive bunched in pairs: the median single gap is ~0, the step time is not
    t_bunched = [x for k in range(10) for x in (10.0 * k, 10.0 * k + 0.1)]
    w4 = decode_window([(t_bunched, [1] * 20)], context=5)
    assert w4["median_gap_ms"] < 1 and w4["itl_ms"] == pytest.approx(5.0, rel=0.05)
    # a burst after a stall (a dozen tokens read at once) does not drag the step time down
    t_burst = [0.0] + [40.0 + 0.01 * k for k in range(12)] + [40.0 + 5.0 * k for k in range(3, 40)]
    w5 = decode_window([(t_burst, [1] * len(t_burst))], context=5)
    assert w5["itl_ms"] == pytest.approx(5.0, rel=0.1)
    # streams that never overlap: no window
    w3 = decode_window([([0, 10, 20], [1, 1, 1]), ([30, 40, 50], [1, 1, 1])], context=5)
    assert w3["itl_ms"] is None and w3["window_ms"] == 0.0


def test_resample_columns_onto_common_axis():
    cols = [(np.array([100.0, 200.0, 400.0]), np.array([2.0, 3.0, 5.0])),
            (np.array([1000.0, 2000.0]), np.array([4.0, 6.0])),
            (np.array([300.0]), np.array([7.0]))]
    axis, table = resample_columns(cols, floor=1.5)
    assert axis.tolist() == [100, 200, 300, 400, 1000, 2000]
    assert table.shape == (6, 3)
    assert table[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 11.0, 21.0]      # own points, inside, extrapolated
    assert table[:, 1].tolist() == [2.2, 2.4, 2.6, 2.8, 4.0, 6.0]        # extrapolated down the first segment
    assert table[:, 2].tolist() == [7.0] * 6                              # one point: constant
    _, t2 = resample_columns([(np.array([1000.0, 2000.0]), np.array([4.0, 6.0]))] * 2 + [cols[0]], floor=2.5)
    assert t2[0, 0] == 2.5                                                # clamped at the floor


def test_info_labels():
    text = ('# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n'
            '# TYPE vllm:cache_config_info gauge\n'
            'vllm:cache_config_info{block_size="32",engine="0",num_gpu_blocks="32768",num_cpu_blocks="None"} 1.0\n'
            'vllm:num_requests_running{engine="0"} 2.0\n'
            'some_info 1\n')
    assert info_labels(text, "vllm:cache_config_info") == {"block_size": "32", "engine": "0",
                                                          "num_gpu_blocks": "32768", "num_cpu_blocks": "None"}
    assert info_labels(text, "some_info") == {}
    assert info_labels(text, "vllm:cache_config") is None and info_labels("", "x") is None
    assert parse_prometheus(text)["vllm:cache_config_info"] == 1.0       # unchanged behaviour


# ---------------------------------------------------------------------------- timing models


def test_polynomial_params_and_profiles(tmp_path):
    assert make_timing("polynomial") == PolynomialTiming()
    t = make_timing("polynomial", params={"prefill_coeffs": [0, 1, 2], "decode_coeffs": (0, 0, 3)})
    assert t.prefill_ms(1, 10, 0) == 12.0 and t.decode_ms(5, 5, 100) == 3.0
    with pytest.raises(ValueError, match="3 finite numbers"):
        make_timing("polynomial", params={"prefill_coeffs": [1, 2]})
    with pytest.raises(ValueError, match="no polynomial section"):
        make_timing("polynomial", "h200_llama3.1-8b-fp8_vllm")
    p = tmp_path / "poly.yaml"
    p.write_text("polynomial: {prefill_coeffs: [0, 0.5, 1]}\nengine: {block_size: 16}\n")
    t = make_timing("polynomial", str(p))
    assert t.prefill_coeffs == (0.0, 0.5, 1.0) and t.decode_coeffs == DECODE_COEFFS
    t = make_timing("polynomial", str(p), params={"prefill_coeffs": [0, 0, 9]})   # given values win
    assert t.prefill_coeffs == (0.0, 0.0, 9.0)
    assert profile_engine_args(p) == {"block_size": 16}
    assert profile_engine_args("h200_llama3.1-8b-fp8_vllm") == {}
    p.write_text("engine: {block_size: 0}\n")
    with pytest.raises(ValueError, match="positive integer"):
        profile_engine_args(p)


def _simulated_bursts(profile: dict, admit_ms: float, per_request_ms: float, batches=(1, 2, 4, 8), length=32):
    """Mean TTFT of bursts of k prompts as the engine model itself predicts for a known pair."""
    pts = [PrefillBatchPoint(batch=k, length=length, mean_ttft_ms=[0.0]) for k in batches]
    sims = fit_bursts(pts, profile, 32, admit_grid_ms=(admit_ms,), per_request_grid_ms=(per_request_ms,))["simulated"]
    return [PrefillBatchPoint(batch=k, length=length, mean_ttft_ms=[sims[k]]) for k in batches]


@pytest.mark.parametrize("admit_ms,per_request_ms", [(0.0, 0.0), (8.0, 0.0), (0.0, 4.0), (2.0, 3.0)])
def test_burst_fit_recovers_known_parameters(admit_ms, per_request_ms):
    """Bursts of k simultaneous prompts are replayed through the engine model on a grid of (admission
    interval, per-request cost); bursts the model itself produced for a pair on the grid give back that
    pair with no residual (deterministic: no wall clock involved)."""
    profile = {"prefill": {"new_tokens": [32, 256, 1024], "ms": [5.0, 12.0, 40.0]},
               "decode": {"active_kv_tokens": [64, 4096], "context_length": [64, 512],
                          "itl_ms": [[3.0, 3.5], [4.0, 6.0]]}}
    pts = _simulated_bursts(profile, admit_ms, per_request_ms)
    fit = fit_bursts(pts, profile, 32)
    assert (fit["admit_interval_ms"], fit["per_request_ms"]) == (admit_ms, per_request_ms)
    assert fit["rms_error_ms"] == pytest.approx(0.0, abs=1e-9)
    # the staircase and per-request cost both make larger bursts slower than lone prompts
    ms = [p.ms for p in pts]
    if admit_ms or per_request_ms:
        assert ms == sorted(ms) and ms[-1] > ms[0] + 5
    assert fit_bursts(pts[:1], profile, 32) is None          # one burst size: nothing to fit


def test_burst_fit_through_a_live_fake_server():
    """End to end through a server on the wall clock: the fake admits requests serially (8 ms each) and
    prefills each on its own. The measured bursts go into the profile with a fit on the grid; the wall
    clock of a loaded machine perturbs the measurements, so only the structure is pinned here (the fit's
    accuracy is pinned deterministically above)."""
    from dynosim.validate.calibrate import ADMIT_GRID_MS, PER_REQUEST_GRID_MS

    plan = CalibrationPlan(prefill_lengths=(32, 256), prefill_repeats=2, prefill_batches=(1, 2, 4, 8),
                           prefill_batch_length=32, prefill_batch_repeats=3, decode_batches=(1,),
                           decode_contexts=(64,), decode_tokens=10, decode_repeats=1, min_window_steps=4)
    _, res, _ = run(calibrate_fake(script(serial_admit_ms=8.0), plan))
    prof = res.to_profile_dict()
    assert prof["engine"]["admit_interval_ms"] in ADMIT_GRID_MS
    assert prof["prefill"]["per_request_ms"] in PER_REQUEST_GRID_MS
    fit = prof["raw"]["burst_fit"]
    assert np.isfinite(fit["rms_error_ms"]) and fit["rms_error_ms"] >= 0.0
    assert [p["batch"] for p in prof["raw"]["prefill_batch"]] == [1, 2, 4, 8]
    measured = {int(k): v for k, v in fit["measured_mean_ttft_ms"].items()}
    # serial admission makes an 8-burst's mean TTFT at least ~3.5 x 8 ms above a lone prompt's
    assert measured[8] - measured[1] > 20.0


def test_interpolated_timing_adds_the_per_request_cost(tmp_path):
    from dynosim.engines.mocker.timing import make_timing

    path = tmp_path / "p.yaml"
    path.write_text("prefill: {new_tokens: [100, 1100], ms: [10, 110], per_request_ms: 2.5}\n"
                    "decode: {active_kv_tokens: [0, 1000], context_length: [100], itl_ms: [[5], [6]]}\n")
    t = make_timing("interpolated", str(path))
    assert t.prefill_ms(1, 500, 0) == pytest.approx(50.0)
    assert t.prefill_ms(4, 125, 0) == pytest.approx(50.0 + 3 * 2.5)   # same 500 new tokens, 3 more requests
    assert t.prefill_ms(4, 125, 125) == 0.0                             # nothing to prefill
    path.write_text(path.read_text().replace("2.5", "-1"))
    with pytest.raises(ValueError, match="per_request_ms"):
        make_timing("interpolated", str(path))


# ---------------------------------------------------------------------------- CLI


def test_calibrate_cli_writes_a_profile_that_run_accepts(tmp_path):
    from typer.testing import CliRunner

    from dynosim.cli import app
    from live.fake_server import fleet_of

    out = tmp_path / "prof.yaml"
    with fleet_of(1, lambda: script(max_model_len=2048)) as fleet:
        r = CliRunner().invoke(app, ["calibrate", "--endpoint", fleet.urls[0], "--served-model-name", MODEL,
                                     "--quick", "--prefill-lengths", "32,128", "--decode-batches", "1,2",
                                     "--decode-contexts", "64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    prof = yaml.safe_load(out.read_text())
    assert prof["prefill"]["new_tokens"] == [32, 128] and prof["engine"]["block_size"] == 32
    assert prof["source"] == fleet.urls[0]
    # the profile drives a simulation directly
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 10 * i, "input_length": 100, "output_length": 5,
                                         "hash_ids": [i]}) + "\n" for i in range(4)))
    r = CliRunner().invoke(app, ["run", "--trace", str(trace), "--trace-block-size", "128", "--block-size", "32",
                                 "--timing", "interpolated", "--timing-profile", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["requests"]["completed"] == 4


def test_calibrate_cli_bad_input():
    from typer.testing import CliRunner

    from dynosim.cli import app

    r = CliRunner().invoke(app, ["calibrate", "--out", "x.yaml"])
    assert r.exit_code == 2 and "exactly one of --endpoint" in r.output
    r = CliRunner().invoke(app, ["calibrate", "--endpoint", "http://127.0.0.1:1", "--prefill-lengths", "a,b",
                                 "--out", "x.yaml"])
    assert r.exit_code == 2 and "--prefill-lengths" in r.output
    r = CliRunner().invoke(app, ["calibrate", "--endpoint", "http://127.0.0.1:1", "--prefill-lengths", "64,32",
                                 "--out", "x.yaml"])
    assert r.exit_code == 2 and "increasing" in r.output
    url = f"http://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(app, ["calibrate", "--endpoint", url, "--served-model-name", "m", "--quick",
                                 "--out", "x.yaml"])
    assert r.exit_code == 3 and "cannot reach the engine" in r.output


def test_calibrate_modules_own_one_thing_and_reach_the_simulator_only_by_its_public_api():
    """validate/calibrate is measuring, fitting and writing in separate modules, each saying what it owns; none
    imports the simulator's internals (the burst fit runs ``dynosim.run``), only ``measure`` talks HTTP."""
    import ast
    from pathlib import Path

    import dynosim.validate.calibrate as pkg

    root = Path(pkg.__file__).parent
    names = sorted(p.name for p in root.glob("*.py"))
    assert names == ["__init__.py", "fit.py", "measure.py", "plan.py", "profile.py", "result.py"]
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert len(ast.get_docstring(tree) or "") > 80, f"{path.name} does not say what it owns"
        assert len(path.read_text().splitlines()) < 450, path.name
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in mods if m.startswith(("dynosim.sim", "dynosim.api", "simpy"))}, path.name
        if path.name not in ("measure.py", "__init__.py"):
            assert not {m for m in mods if m.startswith(("aiohttp", "dynosim.engines.live"))}, path.name


def test_burst_fit_runs_the_public_api(monkeypatch):
    import dynosim

    calls = []
    real = dynosim.run

    def spy(trace, **kw):
        calls.append(kw["config"])
        return real(trace, **kw)
    monkeypatch.setattr(dynosim, "run", spy)
    profile = {"prefill": {"new_tokens": [32, 512], "ms": [5.0, 30.0]},
               "decode": {"active_kv_tokens": [100, 1000], "context_length": [100.0], "itl_ms": [[4.0], [6.0]]}}
    pts = [PrefillBatchPoint(1, 128, [12.0]), PrefillBatchPoint(4, 128, [30.0])]
    fit = fit_bursts(pts, profile, 32, admit_grid_ms=(0.0, 2.0), per_request_grid_ms=(1.0,))
    assert len(calls) == 2 * 2 and {c.engine.admit_interval_ms for c in calls} == {0.0, 2.0}
    assert set(fit["simulated"]) == {1, 4}
