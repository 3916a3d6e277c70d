"""Live engine layer against an in-process fake OpenAI server: streaming client, /metrics, prompts from traces.

Timing assertions are loose on purpose (a shared 2-core CI box): they check
that the client measures the scripted latencies, not how precisely.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynosim.engines.live.client import LiveClient
from dynosim.engines.live.health import wait_healthy
from dynosim.engines.live.metrics import MetricsError, delta, engine_metrics, parse_prometheus, scrape
from dynosim.engines.live.prompts import block_tokens, prompt_token_ids, prompts_for_rows, shared_prefix_tokens
from conftest import load_rows
from live.fake_server import FakeOpenAIServer, Script, free_port

MODEL = "fake-model"


def run(coro):
    return asyncio.run(coro)


def prompt(n: int, start: int = 4) -> list[int]:
    return [start + i % 1000 for i in range(n)]


# ---------------------------------------------------------------------------
# streaming completions


def test_stream_exact_counts_token_times_and_ttft():
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=60, itl_ms=10)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10, connect_timeout_s=2) as c:
                r = await c.complete(prompt(100), 12, request_id="req-1")
            return srv, r

    srv, r = run(main())
    assert r.status == "ok" and r.error is None and r.http_status == 200 and r.finish_reason == "length"
    assert r.request_id == "req-1" and srv.requests[0]["request_id"] == "req-1"
    assert (r.prompt_tokens, r.completion_tokens) == (100, 12) and r.usage_reported
    assert len(r.token_times_ms) == 12 and r.chunk_tokens == [1] * 12
    assert r.t_send_ms <= r.t_first_token_ms == r.token_times_ms[0]
    assert r.t_last_token_ms == r.token_times_ms[-1] <= r.t_end_ms
    assert all(b >= a for a, b in zip(r.token_times_ms, r.token_times_ms[1:]))
    assert 55 <= r.ttft_ms <= 60 + 400
    assert 8 <= r.itl_ms <= 10 + 100
    assert r.per_token_times_ms() == r.token_times_ms
    body = srv.requests[0]["body"]
    assert body["prompt"] == prompt(100) and body["max_tokens"] == 12 and body["model"] == MODEL
    assert body["stream"] is True and body["ignore_eos"] is True and body["temperature"] == 0
    assert body["stream_options"]["include_usage"] is True


def test_request_body_options_and_extra_body():
    c = LiveClient("http://127.0.0.1:1/", MODEL, timeout_s=1, connect_timeout_s=1, continuous_usage=False)
    body = c.request_body([5, 6], 3, ignore_eos=False, extra_body={"kv_transfer_params": {"do_remote_decode": True}})
    assert c.completions_url == "http://127.0.0.1:1/v1/completions"
    assert body["ignore_eos"] is False and body["stream_options"] == {"include_usage": True}
    assert body["kv_transfer_params"] == {"do_remote_decode": True}


@pytest.mark.parametrize("continuous,token_ids,expect_chunks", [
    (True, False, [3, 3, 3, 1]),    # running usage in every chunk: exact per chunk
    (False, True, [3, 3, 3, 1]),    # token_ids in the choices: exact per chunk
    (False, False, [1, 1, 1, 1]),   # neither: one per chunk, the total still comes from usage
])
def test_several_tokens_per_chunk(continuous, token_ids, expect_chunks):
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=5, itl_ms=2, tokens_per_chunk=3,
                                                  send_token_ids=token_ids)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10, continuous_usage=continuous) as c:
                return await c.complete(prompt(40), 10)

    r = run(main())
    assert r.status == "ok" and r.completion_tokens == 10 and r.prompt_tokens == 40
    assert r.chunk_tokens == expect_chunks and len(r.token_times_ms) == 4
    if continuous or token_ids:
        assert len(r.per_token_times_ms()) == 10


@pytest.mark.parametrize("continuous", [True, False])
def test_empty_text_tokens_still_count(continuous):
    # vLLM streams a token that is an incomplete UTF-8 sequence as a chunk with empty text
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=5, itl_ms=2, empty_text_every=3)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10, continuous_usage=continuous) as c:
                return await c.complete(prompt(10), 9)

    r = run(main())
    assert r.status == "ok" and r.completion_tokens == 9
    assert len(r.token_times_ms) == 9 and r.chunk_tokens == [1] * 9


@pytest.mark.parametrize("continuous", [True, False])
def test_bare_finish_chunk_is_not_a_token(continuous):
    # OpenAI's own servers end with a chunk that has a finish_reason and no token
    seen = []

    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=5, itl_ms=2, separate_finish_chunk=True)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10, continuous_usage=continuous) as c:
                return await c.complete(prompt(10), 6, on_token=lambda t, n: seen.append((t, n)))

    r = run(main())
    assert r.status == "ok" and r.completion_tokens == 6 and r.finish_reason == "length"
    assert r.chunk_tokens == [1] * 6 and seen == list(zip(r.token_times_ms, r.chunk_tokens))


def test_stream_without_usage_counts_chunks():
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=2, itl_ms=1)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                return await c.complete(prompt(10), 8, extra_body={"stream_options": {"include_usage": False}})

    r = run(main())
    assert r.status == "ok" and not r.usage_reported and r.prompt_tokens is None and r.cached_tokens is None
    assert r.completion_tokens == 8 and len(r.token_times_ms) == 8


def test_cached_tokens_follow_block_prefixes():
    a = prompt(100)
    b = a[:70] + prompt(30, start=1500)

    async def main(report):
        async with FakeOpenAIServer(script=Script(ttft_ms=2, itl_ms=1, block_size=32,
                                                  report_cached_tokens=report)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                out = [await c.complete(p, 2) for p in (a, b, a, a[:64], a[:64])]
            return out

    cold, shared, again, short_cold, short_again = run(main(True))
    assert cold.cached_tokens == 0
    assert shared.cached_tokens == 64        # 70 shared tokens = 2 full blocks of 32
    assert again.cached_tokens == 96         # a hit never covers the whole prompt: (100 - 1) // 32 blocks
    assert short_cold.cached_tokens == 32 and short_again.cached_tokens == 32  # (64 - 1) // 32 = 1 block
    assert all(r.status == "ok" for r in run(main(False)))
    assert all(r.cached_tokens is None for r in run(main(False)))


def test_concurrent_requests_stream_in_parallel():
    n, ttft, itl, out = 24, 120, 10, 10

    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=ttft, itl_ms=itl)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                t0 = time.monotonic()
                res = await asyncio.gather(*(c.complete(prompt(50 + i), out, request_id=f"r{i}") for i in range(n)))
                return res, time.monotonic() - t0, srv

    res, wall, srv = run(main())
    serial_s = n * (ttft + (out - 1) * itl) / 1000
    assert wall < serial_s / 3, (wall, serial_s)
    assert [r.request_id for r in res] == [f"r{i}" for i in range(n)]
    assert sorted(q["request_id"] for q in srv.requests) == sorted(f"r{i}" for i in range(n))
    for i, r in enumerate(res):
        assert r.status == "ok" and r.prompt_tokens == 50 + i and r.completion_tokens == out
        assert len(r.token_times_ms) == out and r.ttft_ms >= ttft - 5


def test_generated_request_ids_are_unique():
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=1, itl_ms=1)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                return await asyncio.gather(*(c.complete(prompt(8), 1) for _ in range(5)))

    ids = [r.request_id for r in run(main())]
    assert len(set(ids)) == 5 and all(ids)


def test_caller_session_is_used_and_left_open():
    import aiohttp

    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=1, itl_ms=1)) as srv:
            async with aiohttp.ClientSession() as s:
                async with LiveClient(srv.base_url, MODEL, timeout_s=5, session=s) as c:
                    r = await c.complete(prompt(8), 2)
                assert not s.closed
                return r

    assert run(main()).status == "ok"


# ---------------------------------------------------------------------------
# failures come back as results, with a status and a message naming the URL


@pytest.mark.parametrize("mode,status,message,tokens", [
    ("http500", "error", "HTTP 500", 0),
    ("hang", "timeout", "no complete response within 0.6 s", 0),
    ("stall", "timeout", "no complete response within 0.6 s", 3),
    ("drop", "error", "dropped mid-stream", 3),
    ("error_event", "error", "injected engine failure", 3),
    ("no_done", "error", "without [DONE]", 8),
])
def test_each_fault_is_a_result_with_status_and_message(mode, status, message, tokens):
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=5, itl_ms=2)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=0.6, connect_timeout_s=1) as c:
                srv.inject(mode, after_tokens=3)
                t0 = time.monotonic()
                bad = await c.complete(prompt(40), 8, request_id="bad")
                took = time.monotonic() - t0
                good = await c.complete(prompt(40), 8)  # the next request is unaffected
            return srv, bad, took, good

    srv, bad, took, good = run(main())
    assert bad.status == status and bad.request_id == "bad"
    assert message in bad.error and f"{srv.base_url}/v1/completions" in bad.error
    assert bad.completion_tokens == tokens and len(bad.token_times_ms) == tokens
    assert bad.t_end_ms is not None and took < 5
    if mode == "http500":
        assert bad.http_status == 500 and "injected internal server error" in bad.error
    assert good.status == "ok" and good.completion_tokens == 8


def test_read_timeout_catches_a_stalled_stream_early():
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=5, itl_ms=2)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=30, read_timeout_s=0.3) as c:
                srv.inject("stall", after_tokens=2)
                t0 = time.monotonic()
                r = await c.complete(prompt(20), 8)
                return r, time.monotonic() - t0

    r, took = run(main())
    assert r.status == "timeout" and "idle timeout" in r.error and r.completion_tokens == 2 and took < 5


def test_the_idle_timeout_is_on_by_default():
    assert LiveClient("http://127.0.0.1:1", MODEL).idle_timeout_s == 60.0
    assert LiveClient("http://127.0.0.1:1", MODEL, idle_timeout_s=None).idle_timeout_s is None
    with pytest.raises(ValueError):
        LiveClient("http://127.0.0.1:1", MODEL, idle_timeout_s=0)


@pytest.mark.parametrize("mode,after,where", [
    ("stall", 3, "mid-stream"),
    ("stall", 0, "before the first token"),     # headers sent, then nothing
    ("hang", 1, "before the response"),         # the server never answers
    ("stall_keepalive", 3, "mid-stream"),       # SSE comments keep the socket busy but carry no data
])
def test_a_stream_silent_for_the_idle_timeout_fails_with_that_reason(mode, after, where):
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=5, itl_ms=2)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=30, idle_timeout_s=0.4) as c:
                srv.inject(mode, after_tokens=after)
                t0 = time.monotonic()
                r = await c.complete(prompt(20), 8)
                took = time.monotonic() - t0
                good = await c.complete(prompt(20), 8)   # the next request is not affected
                return r, took, good

    r, took, good = run(main())
    assert r.status == "timeout" and not r.ok
    assert f"no data for 0.4 s {where} (idle timeout)" in r.error, r.error
    assert r.completion_tokens == (after if mode != "hang" else 0)
    assert took < 10                                  # not the 30 s whole-request limit
    assert good.ok and good.completion_tokens == 8


def test_unknown_model_is_an_error_with_the_server_message():
    async def main():
        async with FakeOpenAIServer() as srv:
            async with LiveClient(srv.base_url, "other-model", timeout_s=5) as c:
                return await c.complete(prompt(8), 2)

    r = run(main())
    assert r.status == "error" and r.http_status == 404 and "does not exist" in r.error


def test_unreachable_endpoint_is_an_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"

    async def main():
        async with LiveClient(url, MODEL, timeout_s=5, connect_timeout_s=1) as c:
            return await c.complete(prompt(8), 2, request_id="x")

    r = run(main())
    assert r.status == "error" and r.request_id == "x" and r.http_status is None
    assert f"{url}/v1/completions" in r.error and "cannot connect" in r.error
    assert r.completion_tokens == 0 and r.t_first_token_ms is None and r.ttft_ms is None and r.itl_ms is None


def test_cancellation_propagates():
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=2000)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                task = asyncio.create_task(c.complete(prompt(8), 2))
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(main())


# ---------------------------------------------------------------------------
# health waits


def test_wait_healthy_returns_models_once_ready():
    async def main():
        async with FakeOpenAIServer(ready_after_s=0.3) as srv:
            t0 = time.monotonic()
            models = await wait_healthy(srv.base_url, 5, model=MODEL, interval_s=0.05)
            return models, time.monotonic() - t0

    models, took = run(main())
    assert models == [MODEL] and 0.25 <= took < 4


def test_wait_healthy_timeout_names_the_url():
    async def main(url, **kw):
        with pytest.raises(TimeoutError) as ei:
            await wait_healthy(url, 0.4, interval_s=0.05, **kw)
        return str(ei.value)

    async def unhealthy():
        async with FakeOpenAIServer(healthy=False) as srv:
            return srv.base_url, await main(srv.base_url)

    url, msg = run(unhealthy())
    assert url in msg and "/health" in msg and "HTTP 503" in msg

    dead = f"http://127.0.0.1:{free_port()}"
    msg = run(main(dead))
    assert dead in msg and "not healthy after 0.4 s" in msg

    async def wrong_model():
        async with FakeOpenAIServer() as srv:
            return await main(srv.base_url, model="llama-70b")

    assert "not 'llama-70b'" in run(wrong_model())


def test_wait_healthy_gives_up_when_the_process_died():
    async def main():
        with pytest.raises(RuntimeError, match="exited before it became healthy"):
            await wait_healthy(f"http://127.0.0.1:{free_port()}", 30, is_alive=lambda: False)

    run(main())


# ---------------------------------------------------------------------------
# /metrics

EXPOSITION = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 2054.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 6.0
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 1024
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:num_requests_running{model_name="we,ird} \\"quoted\\""} 3 1700000000000
vllm:num_requests_waiting 1
vllm:num_preemptions_total{engine="0"} 8
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 5
vllm:time_to_first_token_seconds_count{model_name="m"} 5
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.75
rpc_latency{quantile="0.5"} 3
nan_metric NaN
inf_metric +Inf
this line is garbage
# EOF
"""


def test_parse_prometheus_sums_labels_and_skips_buckets_and_comments():
    s = parse_prometheus(EXPOSITION)
    assert s["vllm:prefix_cache_queries_total"] == 2060.0
    assert s["vllm:prefix_cache_hits_total"] == 1024.0 and s["vllm:num_preemptions_total"] == 8.0
    assert s["vllm:num_requests_running"] == 3.0 and s["vllm:num_requests_waiting"] == 1.0
    assert s["vllm:time_to_first_token_seconds_count"] == 5.0 and s["vllm:time_to_first_token_seconds_sum"] == 0.75
    assert "vllm:time_to_first_token_seconds_bucket" not in s and "rpc_latency" not in s
    assert "nan_metric" not in s and s["inf_metric"] == float("inf") and "this" not in s
    with pytest.raises(ValueError):
        parse_prometheus(EXPOSITION, strict=True)
    e = engine_metrics(s)
    assert e == {"prefix_cache_queries": 2060.0, "prefix_cache_hits": 1024.0, "kv_cache_usage": 0.25,
                 "preemptions": 8.0, "running": 3.0, "waiting": 1.0}
    # older vLLM spellings map to the same keys
    assert engine_metrics(parse_prometheus("vllm:gpu_prefix_cache_hits_total 7\nvllm:gpu_cache_usage_perc 0.5\n")) \
        == {"prefix_cache_hits": 7.0, "kv_cache_usage": 0.5}


def test_delta_counters_gauges_and_resets():
    before = {"prefix_cache_queries": 100.0, "prefix_cache_hits": 40.0, "running": 5.0, "preemptions": 9.0,
              "gone": 1.0}
    after = {"prefix_cache_queries": 350.0, "prefix_cache_hits": 104.0, "running": 2.0, "preemptions": 3.0,
             "new": 1.0}
    assert delta(before, after) == {"prefix_cache_queries": 250.0, "prefix_cache_hits": 64.0, "running": 2.0,
                                    "preemptions": 3.0}


def test_scrape_fake_server_and_delta_over_requests():
    a = prompt(100)
    b = a[:80] + prompt(20, start=1700)

    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=2, itl_ms=1, cache_blocks=1000)) as srv:
            before = await scrape(srv.base_url)
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                res = [await c.complete(a, 5), await c.complete(b, 7)]
            after = await scrape(srv.base_url)
            raw = await scrape(srv.base_url, raw=True)
            return before, after, raw, res

    before, after, raw, res = run(main())
    d = delta(before, after)
    assert before["prefix_cache_queries"] == 0 and before["running"] == 0
    assert d["prefix_cache_queries"] == 200 and d["prefix_cache_hits"] == 64 == sum(r.cached_tokens for r in res)
    assert d["prompt_tokens"] == 200 and d["generation_tokens"] == 12 and d["requests_finished"] == 2
    assert d["preemptions"] == 0 and d["running"] == 0 and d["waiting"] == 0
    assert 0 < after["kv_cache_usage"] <= 1
    assert raw["vllm:time_to_first_token_seconds_count"] == 2 and "vllm:prefix_cache_hits_total" in raw


def test_scrape_sees_running_and_waiting_mid_run():
    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=300, itl_ms=1, max_running=2)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                tasks = [asyncio.create_task(c.complete(prompt(8), 2)) for _ in range(5)]
                await asyncio.sleep(0.15)
                mid = await scrape(srv.base_url)
                res = await asyncio.gather(*tasks)
            return mid, res

    mid, res = run(main())
    assert mid["running"] == 2 and mid["waiting"] == 3
    assert all(r.status == "ok" for r in res)


def test_scrape_unreachable_raises_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsError, match=f"{url}/metrics"):
        run(scrape(url, timeout_s=2))


# ---------------------------------------------------------------------------
# prompts from trace hash_ids


def test_prompt_lengths_ranges_and_determinism():
    p = prompt_token_ids([7, 8, 9], 1100, trace_block_size=512, vocab_size=2048)
    assert len(p) == 1100 and min(p) >= 4 and max(p) < 2048 and all(type(t) is int for t in p)
    assert p == prompt_token_ids([7, 8, 9], 1100, trace_block_size=512, vocab_size=2048)
    assert p[:512] == block_tokens(7, 512, vocab_size=2048).tolist()
    assert p[1024:] == block_tokens(9, 512, vocab_size=2048).tolist()[:76]
    assert p != prompt_token_ids([7, 8, 9], 1100, trace_block_size=512, vocab_size=2048, seed=1)
    q = prompt_token_ids([7, 8, 2**64 - 1], 1030, trace_block_size=512, vocab_size=128256, low=10, high=128000)
    assert len(q) == 1030 and 10 <= min(q) and max(q) < 128000
    assert len(set(p)) > 500  # well spread over the vocabulary
    assert prompt_token_ids([1], 1, vocab_size=5) == [4]  # a one-id range


def test_prompt_errors():
    with pytest.raises(ValueError, match="cannot cover"):
        prompt_token_ids([1, 2], 1025, trace_block_size=512, vocab_size=2048)
    with pytest.raises(ValueError, match="input_length"):
        prompt_token_ids([1], 0, vocab_size=2048)
    with pytest.raises(ValueError, match="token range"):
        prompt_token_ids([1], 5, vocab_size=4)  # nothing left above the 4 special ids
    with pytest.raises(ValueError, match="2\\*\\*64"):
        prompt_token_ids([-1], 5, vocab_size=2048)


@settings(max_examples=60)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=5), st.lists(st.integers(0, 6), min_size=1, max_size=5),
       st.integers(1, 80), st.integers(1, 80), st.sampled_from([1, 8, 16]))
def test_shared_hash_prefixes_are_shared_token_prefixes(ids_a, ids_b, la, lb, tbs):
    la, lb = min(la, len(ids_a) * tbs), min(lb, len(ids_b) * tbs)
    a = prompt_token_ids(ids_a, la, trace_block_size=tbs, vocab_size=50_000)
    b = prompt_token_ids(ids_b, lb, trace_block_size=tbs, vocab_size=50_000)
    assert (len(a), len(b)) == (la, lb)
    k = 0
    while k < min(len(ids_a), len(ids_b)) and ids_a[k] == ids_b[k]:
        k += 1
    expect = min(k * tbs, la, lb)
    common = shared_prefix_tokens(a, b)
    assert common >= expect
    # past the shared ids the blocks differ (a 1-in-50,000 chance per token of matching by luck, tolerated once)
    assert common <= expect + 1 or expect == min(la, lb)


def test_different_hash_ids_give_different_blocks():
    blocks = np.array([block_tokens(h, 64, vocab_size=32_000) for h in range(200)])
    assert len({tuple(b) for b in blocks}) == 200
    # and no two blocks agree on more than a few positions (independent streams)
    same = (blocks[:, None, :] == blocks[None, :, :]).sum(-1)
    np.fill_diagonal(same, 0)
    assert same.max() <= 4


def test_prompts_for_trace_rows_hit_the_prefix_cache_as_the_trace_says(tmp_path):
    tbs, bs = 64, 32
    rows = [
        {"timestamp": 0, "input_length": 200, "output_length": 3, "hash_ids": [1, 2, 3, 4]},
        {"timestamp": 1, "input_length": 150, "output_length": 3, "hash_ids": [1, 2, 9]},     # shares 2 ids
        {"timestamp": 2, "input_length": 100, "output_length": 3, "hash_ids": [5, 6]},        # shares nothing
        {"timestamp": 3, "input_length": 230, "output_length": 3, "hash_ids": [1, 2, 3, 4]},  # shares 200 tokens
    ]
    trace = load_rows(tmp_path, rows, tbs=tbs)
    prompts = prompts_for_rows(trace.rows(), trace_block_size=tbs, vocab_size=2048)
    assert prompts == prompts_for_rows(rows, trace_block_size=tbs, vocab_size=2048)
    assert [len(p) for p in prompts] == [200, 150, 100, 230]

    async def main():
        async with FakeOpenAIServer(script=Script(ttft_ms=1, itl_ms=1, block_size=bs, vocab_size=2048)) as srv:
            async with LiveClient(srv.base_url, MODEL, timeout_s=10) as c:
                return [await c.complete(p, r["output_length"]) for p, r in zip(prompts, rows)]

    res = run(main())
    assert [r.cached_tokens for r in res] == [0, 128, 0, 192]  # full 32-token blocks of the shared prefix
    assert [r.completion_tokens for r in res] == [3, 3, 3, 3]
