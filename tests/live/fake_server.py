"""In-process fake of vLLM's OpenAI-compatible server (aiohttp), with scripted latencies and faults.

Serves what the live client and the validation use:

- ``POST /v1/completions`` (prompt as token ids; streamed as vLLM streams it:
  one SSE ``data:`` chunk per step, ``stream_options.include_usage`` /
  ``continuous_usage_stats``, ``data: [DONE]``), and non-streamed;
- ``GET /health`` (200 once ``ready_after_s`` has passed and ``healthy``),
  ``GET /v1/models``, ``GET /metrics`` (Prometheus text with vLLM's names,
  incl. ``# HELP``/``# TYPE`` lines, ``_created`` samples and a histogram).

Timing is scripted (``Script``): token k of a request is due at
``arrival + ttft_ms + prefill_ms_per_token * uncached_prompt_tokens +
k * itl_ms`` (absolute schedule, so sleeps do not drift), optionally behind
a ``max_running`` gate (queued requests count as waiting). With
``decode_step_ms`` set (a callable of the number of running streams and their
summed context tokens, prompt + generated), each token after the first comes
that long after the previous one instead (a batch-dependent decode step).
With ``num_gpu_blocks`` set, ``/metrics`` carries vLLM's info metric
``vllm:cache_config_info{block_size=...,num_gpu_blocks=...} 1.0``.

Prefix cache: chained hashes of full ``block_size`` token blocks, LRU over
``cache_blocks`` (unbounded by default); like vLLM V1 a hit never covers the
whole prompt (at most ``(len - 1) // block_size`` blocks), queries and hits
are counted in tokens, and a prompt's blocks are cached at admission.

Faults (``inject(mode, count=1, after_tokens=1)``), taken by the next
``count`` completion requests in arrival order:
``http500`` (error JSON before streaming), ``hang`` (never answers),
``stall`` (stops sending after ``after_tokens`` tokens, connection open),
``stall_keepalive`` (the same, but an SSE comment ``: ping`` every 50 ms keeps the connection busy),
``drop`` (closes the connection after ``after_tokens`` tokens),
``error_event`` (an error object in the stream after ``after_tokens``),
``no_done`` (ends the stream cleanly but without ``[DONE]``),
``kv_load_fail`` (a decode request's KV pull fails: HTTP 500, as vLLM's
``kv_load_failure_policy=fail`` ends it).

Disaggregated hand-off, as vLLM's NixlConnector speaks it: a request with
``kv_transfer_params.do_remote_decode`` is a prefill; its answer carries
``kv_transfer_params`` naming this server's engine id and the prompt's blocks.
A request with ``do_remote_prefill`` is a decode: it "pulls" those blocks
(``kv_transfers`` / ``kv_transfer_bytes`` counted, peers remembered) and skips
the prompt's compute, so its first token comes ``ttft_ms`` after admission.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
import threading
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

FAULTS = ("http500", "hang", "stall", "stall_keepalive", "drop", "error_event", "no_done", "kv_load_fail")
KV_BYTES_PER_BLOCK = 4096


@dataclass
class Script:
    ttft_ms: float = 20.0
    itl_ms: float = 5.0
    prefill_ms_per_token: float = 0.0   # added to TTFT per uncached prompt token
    tokens_per_chunk: int = 1           # >1: several tokens per SSE chunk (as with speculative decoding)
    empty_text_every: int = 0           # k > 0: every k-th token streams with empty text (incomplete UTF-8)
    send_token_ids: bool = False        # put "token_ids" in each choice
    separate_finish_chunk: bool = False  # OpenAI style: finish_reason in an extra chunk with no token
    report_cached_tokens: bool = True   # usage.prompt_tokens_details (vLLM: --enable-prompt-tokens-details)
    block_size: int = 32
    cache_blocks: int | None = None     # LRU capacity in blocks (None: unbounded)
    vocab_size: int = 2048
    max_running: int | None = None      # at most this many streams at once; the rest wait
    decode_step_ms: Callable[[int, int], float] | None = None  # (running streams, their context tokens) -> ms
    num_gpu_blocks: int | None = None   # expose vllm:cache_config_info with this (and block_size)
    max_model_len: int = 2048           # reported by /v1/models
    serial_admit_ms: float = 0.0        # requests are admitted one after another, each taking this long


@dataclass
class _Fault:
    mode: str
    after_tokens: int = 1


@dataclass
class FakeOpenAIServer:
    model: str = "fake-model"
    script: Script = field(default_factory=Script)
    healthy: bool = True
    ready_after_s: float = 0.0
    host: str = "127.0.0.1"

    def __post_init__(self):
        self.base_url: str | None = None
        self.requests: list[dict] = []          # every completion request: {"body", "request_id", "fault"}
        self.counters = dict(prefix_cache_queries=0, prefix_cache_hits=0, prompt_tokens=0, generation_tokens=0,
                             preemptions=0, request_success=0)
        self.running = 0
        self.waiting = 0
        self.active_kv_tokens = 0               # prompt + generated tokens of the running streams
        self.ttft_observations: list[float] = []
        self._faults: list[_Fault] = []
        self._cache: OrderedDict[int, None] = OrderedDict()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._gate: asyncio.Semaphore | None = None
        self._t_start = 0.0
        self._sent: dict[str, int] = {}          # tokens streamed so far, by response id
        self.engine_id = uuid.uuid4().hex
        self.kv_peers: set[str] = set()          # prefill engines this (decode) server pulled KV from
        self.kv_transfers = 0
        self.kv_transfer_bytes = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> FakeOpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)  # a free port
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{port}"
        self._t_start = time.monotonic()
        if self.script.max_running:
            self._gate = asyncio.Semaphore(self.script.max_running)
        self._admit_free = 0.0
        return self

    async def stop(self) -> None:
        self._closing.set()
        runner, self._runner = self._runner, None     # two stops at once (a test's kill and its teardown):
        if runner is not None:                       # only the first cleans up
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def inject(self, mode: str, *, count: int = 1, after_tokens: int = 1) -> None:
        if mode not in FAULTS:
            raise ValueError(f"unknown fault {mode!r}; one of {FAULTS}")
        self._faults.extend(_Fault(mode, after_tokens) for _ in range(count))

    # ---------------------------------------------------------------- prefix cache

    def _block_keys(self, prompt: list[int]) -> list[int]:
        bs = self.script.block_size
        keys, prev = [], 0
        for i in range(len(prompt) // bs):
            prev = hash((prev, tuple(prompt[i * bs:(i + 1) * bs])))
            keys.append(prev)
        return keys

    def _admit(self, prompt: list[int]) -> int:
        """Cached prompt tokens for this prompt (then cache its full blocks); vLLM V1 semantics."""
        keys = self._block_keys(prompt)
        hit = 0
        for k in keys[:(len(prompt) - 1) // self.script.block_size]:
            if k not in self._cache:
                break
            hit += 1
        for k in keys:
            self._cache[k] = None
            self._cache.move_to_end(k)
        cap = self.script.cache_blocks
        while cap is not None and len(self._cache) > cap:
            self._cache.popitem(last=False)
        cached = hit * self.script.block_size
        self.counters["prefix_cache_queries"] += len(prompt)
        self.counters["prefix_cache_hits"] += cached
        self.counters["prompt_tokens"] += len(prompt)
        return cached

    # ---------------------------------------------------------------- handlers

    async def _health(self, request: web.Request) -> web.Response:
        ready = self.healthy and time.monotonic() - self._t_start >= self.ready_after_s
        return web.Response(status=200 if ready else 503, text="" if ready else "starting")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "owned_by": "vllm",
             "max_model_len": self.script.max_model_len}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        lab = f'{{engine="0",model_name="{self.model}"}}'
        c = self.counters
        usage = len(self._cache) / self.script.cache_blocks if self.script.cache_blocks else 0.0
        lines = []

        def metric(name, kind, value, help_="fake"):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "counter":
                lines.append(f"{name}_total{lab} {float(value)}")
                lines.append(f"{name}_created{lab} 1.7e9")
            else:
                lines.append(f"{name}{lab} {float(value)}")

        metric("vllm:num_requests_running", "gauge", self.running, "Number of requests in model execution batches.")
        if self.script.num_gpu_blocks is not None:
            lines.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
            lines.append("# TYPE vllm:cache_config_info gauge")
            lines.append(f'vllm:cache_config_info{{block_size="{self.script.block_size}",cache_dtype="auto",'
                         f'enable_prefix_caching="True",engine="0",num_cpu_blocks="None",'
                         f'num_gpu_blocks="{self.script.num_gpu_blocks}",num_gpu_blocks_override="None"}} 1.0')
        metric("vllm:num_requests_waiting", "gauge", self.waiting)
        metric("vllm:kv_cache_usage_perc", "gauge", usage, "KV-cache usage. 1 means 100 percent usage.")
        metric("vllm:prefix_cache_queries", "counter", c["prefix_cache_queries"])
        metric("vllm:prefix_cache_hits", "counter", c["prefix_cache_hits"])
        metric("vllm:num_preemptions", "counter", c["preemptions"])
        metric("vllm:prompt_tokens", "counter", c["prompt_tokens"])
        metric("vllm:generation_tokens", "counter", c["generation_tokens"])
        lines.append("# HELP vllm:request_success_total Count of successfully processed requests.")
        lines.append("# TYPE vllm:request_success_total counter")
        lines.append(f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="{self.model}"}} '
                     f'{float(c["request_success"])}')
        lines.append(f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="{self.model}"}} 0.0')
        obs = self.ttft_observations
        lines.append("# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.")
        lines.append("# TYPE vllm:time_to_first_token_seconds histogram")
        for le in (0.01, 0.1, 1.0, "+Inf"):
            n = sum(1 for x in obs if le == "+Inf" or x <= le)
            lines.append(f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{le}",model_name="{self.model}"}} '
                         f"{float(n)}")
        lines.append(f"vllm:time_to_first_token_seconds_count{lab} {float(len(obs))}")
        lines.append(f"vllm:time_to_first_token_seconds_sum{lab} {float(sum(obs))}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _error(self, status: int, message: str, kind: str = "BadRequestError") -> web.Response:
        return web.json_response({"object": "error", "message": message, "type": kind, "param": None,
                                  "code": status}, status=status)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        arrival = asyncio.get_running_loop().time()
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "request body is not JSON")
        fault = self._faults.pop(0) if self._faults else None
        self.requests.append({"body": body, "request_id": request.headers.get("X-Request-Id"),
                              "fault": fault.mode if fault else None})
        if body.get("model") != self.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        prompt = body.get("prompt")
        if not (isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt)):
            return self._error(400, "the fake server takes prompts as a non-empty list of token ids")
        if any(not 0 <= t < self.script.vocab_size for t in prompt):
            return self._error(400, f"token id out of vocabulary (size {self.script.vocab_size})")
        max_tokens = body.get("max_tokens")
        if type(max_tokens) is not int or max_tokens < 1:
            return self._error(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        if fault and fault.mode == "http500":
            return self._error(500, "injected internal server error", "InternalServerError")
        if fault and fault.mode == "hang":
            await self._closing.wait()
            return web.Response(status=503)
        ktp = body.get("kv_transfer_params")
        if isinstance(ktp, dict) and ktp.get("do_remote_prefill"):
            if not ktp.get("remote_engine_id") or not isinstance(ktp.get("remote_block_ids"), list):
                return self._error(400, f"kv_transfer_params without a remote engine or blocks: {ktp}")
            if fault and fault.mode == "kv_load_fail":
                return self._error(500, f"KV load from engine {ktp['remote_engine_id']} failed (injected)",
                                   "InternalServerError")
            self.kv_peers.add(ktp["remote_engine_id"])
            self.kv_transfers += 1
            self.kv_transfer_bytes += KV_BYTES_PER_BLOCK * len(ktp["remote_block_ids"])

        if self._gate is not None:
            self.waiting += 1
            try:
                await self._gate.acquire()
            finally:
                self.waiting -= 1
        self.running += 1
        try:
            return await self._generate(request, body, prompt, max_tokens, arrival, fault)
        finally:
            self.running -= 1
            if self._gate is not None:
                self._gate.release()

    async def _generate(self, request, body, prompt, max_tokens, arrival, fault):
        sc = self.script
        loop = asyncio.get_running_loop()
        start = max(arrival, loop.time())
        if sc.serial_admit_ms:
            start = max(start, self._admit_free)
            self._admit_free = start + sc.serial_admit_ms / 1000.0
        ktp = body.get("kv_transfer_params") if isinstance(body.get("kv_transfer_params"), dict) else {}
        cached = self._admit(prompt)
        computed = 0 if ktp.get("do_remote_prefill") else len(prompt) - cached
        first_due = start + (sc.ttft_ms + sc.prefill_ms_per_token * computed) / 1000.0
        seed = sum(prompt) % sc.vocab_size
        tokens = [(seed + 7 * k) % sc.vocab_size for k in range(max_tokens)]
        details = {"cached_tokens": cached} if sc.report_cached_tokens else None

        def usage(n_out):
            return {"prompt_tokens": len(prompt), "total_tokens": len(prompt) + n_out, "completion_tokens": n_out,
                    "prompt_tokens_details": details}

        rid = f"cmpl-{uuid.uuid4().hex[:16]}"
        if not body.get("stream"):
            await asyncio.sleep(max(0.0, first_due + (max_tokens - 1) * sc.itl_ms / 1000 - loop.time()))
            self.counters["generation_tokens"] += max_tokens
            self.counters["request_success"] += 1
            answer = {"id": rid, "object": "text_completion", "model": self.model,
                      "choices": [{"index": 0, "text": "".join(f"<{t}>" for t in tokens),
                                   "finish_reason": "length"}], "usage": usage(max_tokens)}
            if ktp.get("do_remote_decode"):
                host, port = request.transport.get_extra_info("sockname")[:2]
                answer["kv_transfer_params"] = {
                    "do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": self.engine_id,
                    "remote_block_ids": list(range(len(prompt) // sc.block_size)), "remote_host": host,
                    "remote_port": port, "tp_size": 1}
            return web.json_response(answer)

        opts = body.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage"))
        continuous = include_usage and bool(opts.get("continuous_usage_stats"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(obj) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            await resp.write(f"data: {data}\n\n".encode())

        kv_held = len(prompt)
        self.active_kv_tokens += kv_held
        try:
            return await self._stream(request, resp, send, sc, fault, tokens, max_tokens, first_due, arrival, rid,
                                      usage, continuous, include_usage, prompt)
        finally:
            self.active_kv_tokens -= kv_held + self._sent.pop(rid, 0)

    async def _stream(self, request, resp, send, sc, fault, tokens, max_tokens, first_due, arrival, rid, usage,
                      continuous, include_usage, prompt):
        loop = asyncio.get_running_loop()
        sent = 0
        per = max(1, sc.tokens_per_chunk)
        due = first_due
        while sent < max_tokens:
            n = min(per, max_tokens - sent)
            if fault and fault.mode in ("stall", "stall_keepalive", "drop", "error_event") \
                    and sent + n > fault.after_tokens:
                if fault.mode == "stall":
                    await self._closing.wait()
                    return resp
                if fault.mode == "stall_keepalive":
                    while not self._closing.is_set():
                        await resp.write(b": ping\n\n")
                        await asyncio.sleep(0.05)
                    return resp
                if fault.mode == "drop":
                    request.transport.close()  # mid-chunked-body: the client sees an incomplete payload
                    return resp
                await send({"object": "error", "message": "injected engine failure", "type": "InternalServerError",
                            "code": 500, "error": {"message": "injected engine failure", "code": 500}})
                await send("[DONE]")
                return resp
            if sc.decode_step_ms is None:
                due = first_due + (sent + n - 1) * sc.itl_ms / 1000.0
            else:  # relative: each token one decode step of the batch as it is now
                for _ in range(n if sent else n - 1):
                    step = sc.decode_step_ms(self.running, self.active_kv_tokens) / 1000.0
                    # an engine does not catch up after a stall: more than a step late, restart from now
                    due = max(due, loop.time() - step) + step
            await asyncio.sleep(max(0.0, due - loop.time()))
            if sent == 0:
                self.ttft_observations.append(loop.time() - arrival)
            chunk_tokens = tokens[sent:sent + n]
            text = "".join("" if sc.empty_text_every and (sent + i + 1) % sc.empty_text_every == 0 else f"<{t}>"
                           for i, t in enumerate(chunk_tokens))
            sent += n
            finish = "length" if sent == max_tokens and not sc.separate_finish_chunk else None
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            if sc.send_token_ids:
                choice["token_ids"] = chunk_tokens
            await send({"id": rid, "object": "text_completion", "created": int(time.time()), "model": self.model,
                        "choices": [choice], "usage": usage(sent) if continuous else None})
            self.counters["generation_tokens"] += n
            self.active_kv_tokens += n
            self._sent[rid] = sent
        if sc.separate_finish_chunk:
            await send({"id": rid, "object": "text_completion", "created": int(time.time()), "model": self.model,
                        "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length",
                                     "stop_reason": None}], "usage": usage(max_tokens) if continuous else None})
        if include_usage:
            await send({"id": rid, "object": "text_completion", "created": int(time.time()), "model": self.model,
                        "choices": [], "usage": usage(max_tokens)})
        self.counters["request_success"] += 1
        if not (fault and fault.mode == "no_done"):
            await send("[DONE]")
        await resp.write_eof()
        return resp


def free_port() -> int:
    """A loopback TCP port nothing listens on (for "unreachable endpoint" tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeFleet:
    """Fake servers served from a background thread's event loop."""

    def __init__(self, n: int, make_script=None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            return [await FakeOpenAIServer(script=(make_script or Script)()).start() for _ in range(n)]
        self.servers = self.call(start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @property
    def urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    def inject(self, i: int, mode: str, **kw) -> None:
        async def go():
            self.servers[i].inject(mode, **kw)
        self.call(go())

    def close(self) -> None:
        for s in self.servers:
            self.call(s.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def fleet_of(n: int = 1, make_script=None):
    """``n`` fake servers on their own event loop thread, for code that calls ``asyncio.run`` itself."""
    fleet = FakeFleet(n, make_script)
    try:
        yield fleet
    finally:
        fleet.close()
