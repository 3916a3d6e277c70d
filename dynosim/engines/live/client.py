"""Streaming client for OpenAI-compatible engine servers (vLLM, SGLang), on aiohttp.

``LiveClient.complete`` sends one ``POST /v1/completions`` with the prompt as
token ids, ``stream: true``, usage reporting, ``ignore_eos``, ``temperature:
0`` and the exact ``max_tokens``, and returns a ``CompletionResult`` with the
arrival time of every streamed chunk. It never raises for a failed request:
HTTP errors, refused or dropped connections, error events in the stream,
malformed data and timeouts all come back as a result with ``status``
("error" or "timeout") and an ``error`` message naming the URL, together with
whatever had been received (so a replay counts failures instead of losing
them). Only cancellation propagates.

Timeouts: ``idle_timeout_s`` (default 60 s) is the longest silence allowed
between two stream chunks that carry data -- also before the response
headers and before the first token; SSE keep-alive comments do not count as
data. A stream that hangs mid-response therefore fails after that long, with
status "timeout" and the reason ("no data for 60 s (idle timeout)") and the
tokens received so far, instead of holding its request until the whole-request
limit ``timeout_s`` (600 s). ``connect_timeout_s`` bounds the TCP connect.

Counting tokens: ``usage`` (the final chunk, asked for with
``stream_options.include_usage``) gives the totals. vLLM streams one chunk per
engine step, normally one token each, but a chunk can carry several tokens
(e.g. speculative decoding) and a token that is an incomplete UTF-8 sequence
comes as a chunk with empty text. With ``continuous_usage=True`` (the
default; vLLM's ``continuous_usage_stats``) every chunk carries the running
usage, so ``chunk_tokens`` is exact per chunk; otherwise a chunk counts
``len(token_ids)`` when the server sends them, else 1.

Times are ``time.monotonic()`` in milliseconds: ``t_send_ms`` just before the
request is written, one entry in ``token_times_ms`` per chunk that carried
tokens (its arrival), ``t_end_ms`` when the stream ended or failed.

Why one module of about 400 lines: the request body, the stream parser and the
failure classification are one protocol, shared by ``complete`` and
``prefill_handoff``; whether a server is up lives in ``health``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

Status = Literal["ok", "error", "timeout"]


def _now_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass
class CompletionResult:
    """Outcome of one streamed completion; failures are results too (``status`` != "ok")."""

    request_id: str
    status: Status
    error: str | None
    prompt_tokens: int | None          # usage.prompt_tokens (None: the server never reported usage)
    completion_tokens: int             # usage.completion_tokens, else the tokens counted in chunks
    cached_tokens: int | None          # usage.prompt_tokens_details.cached_tokens, when the server reports it
    t_send_ms: float
    t_first_token_ms: float | None
    t_last_token_ms: float | None
    token_times_ms: list[float] = field(default_factory=list)  # arrival of each chunk that carried tokens
    http_status: int | None = None
    chunk_tokens: list[int] = field(default_factory=list)      # tokens carried by each of those chunks
    finish_reason: str | None = None
    usage_reported: bool = False
    t_end_ms: float | None = None
    kv_transfer_params: dict | None = None                     # as a NIXL prefill server returns it

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ttft_ms(self) -> float | None:
        """First token time minus send time (the client-side TTFT)."""
        return None if self.t_first_token_ms is None else self.t_first_token_ms - self.t_send_ms

    @property
    def e2e_ms(self) -> float | None:
        return None if self.t_last_token_ms is None else self.t_last_token_ms - self.t_send_ms

    @property
    def itl_ms(self) -> float | None:
        """aiperf's per-request ITL: (last token - first token) / (output tokens - 1)."""
        if self.t_first_token_ms is None or self.completion_tokens < 2:
            return None
        return (self.t_last_token_ms - self.t_first_token_ms) / (self.completion_tokens - 1)

    def per_token_times_ms(self) -> list[float]:
        """One time per token: each chunk's arrival repeated for the tokens it carried."""
        out: list[float] = []
        for t, n in zip(self.token_times_ms, self.chunk_tokens):
            out.extend([t] * n)
        return out


class _StreamError(Exception):
    """The server reported an error inside the stream, or the stream was malformed."""


class _IdleTimeout(Exception):
    """No stream data for the idle timeout (not a TimeoutError, so never confused with the whole-request one)."""


class LiveClient:
    """One engine endpoint. Use as ``async with LiveClient(url, model) as c: await c.complete(...)``.

    ``timeout_s`` bounds a whole request (connect, queueing, every token);
    ``connect_timeout_s`` the TCP connect; ``idle_timeout_s`` the silence
    allowed between two data chunks (headers and first token included; None:
    no idle limit). ``read_timeout_s`` is its old name (either may be given).
    A ``session`` passed in is used and left open; otherwise the client owns
    one (no connection limit, so a replay can hold as many streams open as it
    has requests in flight).
    """

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 600.0, connect_timeout_s: float = 10.0,
                 idle_timeout_s: float | None = 60.0, read_timeout_s: float | None = None,
                 session: aiohttp.ClientSession | None = None,
                 continuous_usage: bool = True, headers: dict[str, str] | None = None):
        if read_timeout_s is not None:
            idle_timeout_s = read_timeout_s
        if timeout_s <= 0 or connect_timeout_s <= 0 or (idle_timeout_s is not None and idle_timeout_s <= 0):
            raise ValueError("timeouts must be > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.continuous_usage = continuous_usage
        self.headers = dict(headers or {})
        self._session = session
        self._owns_session = session is None

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}/v1/completions"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> LiveClient:
        self._get_session()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def request_body(self, prompt_token_ids: list[int], max_tokens: int, *, ignore_eos: bool = True,
                     extra_body: dict | None = None) -> dict:
        """The JSON body ``complete`` sends."""
        stream_options = {"include_usage": True}
        if self.continuous_usage:
            stream_options["continuous_usage_stats"] = True
        body = {"model": self.model, "prompt": list(prompt_token_ids), "max_tokens": int(max_tokens),
                "temperature": 0, "ignore_eos": bool(ignore_eos), "stream": True,
                "stream_options": stream_options}
        if extra_body:
            body.update(extra_body)
        return body

    async def complete(self, prompt_token_ids: list[int], max_tokens: int, *, request_id: str | None = None,
                       ignore_eos: bool = True, extra_body: dict | None = None,
                       on_token: Callable[[float, int], None] | None = None) -> CompletionResult:
        """Stream one completion; never raises except on cancellation.

        ``on_token(t_ms, n_tokens)`` is called as each token-carrying chunk arrives.
        """
        rid = request_id or uuid.uuid4().hex
        url = self.completions_url
        res = CompletionResult(rid, "ok", None, None, 0, None, _now_ms(), None, None)
        try:
            body = self.request_body(prompt_token_ids, max_tokens, ignore_eos=ignore_eos, extra_body=extra_body)
            session = self._get_session()
            # sock_connect, not connect: waiting for a pooled connection is not a connect failure
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s,
                                            sock_read=self.idle_timeout_s)
            headers = {"X-Request-Id": rid, "Accept": "text/event-stream", **self.headers}
        except Exception as exc:  # bad arguments are a failed request, not a crash of the replay
            return self._fail(res, "error", f"POST {url}: could not build the request: {type(exc).__name__}: {exc}")
        res.t_send_ms = _now_ms()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with session.post(url, json=body, headers=headers, timeout=timeout) as resp:
                    res.http_status = resp.status
                    if resp.status != 200:
                        text = await resp.text(errors="replace")
                        return self._fail(res, "error", f"POST {url} answered HTTP {resp.status}: {_brief(text)}")
                    await self._read_stream(resp, res, on_token)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            # asyncio.timeout, or aiohttp's connect/read timeouts (subclasses of TimeoutError)
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                msg = f"POST {url}: connect timed out after {self.connect_timeout_s} s"
            elif isinstance(exc, aiohttp.ServerTimeoutError):
                msg = self._idle_message(url, res)
            else:
                msg = f"POST {url}: no complete response within {self.timeout_s} s"
            return self._fail(res, "timeout", f"{msg}; {_progress(res)}")
        except aiohttp.ClientConnectorError as exc:
            return self._fail(res, "error", f"POST {url}: cannot connect: {exc}")
        except aiohttp.ClientPayloadError as exc:
            return self._fail(res, "error", f"POST {url}: connection dropped mid-stream ({exc}); {_progress(res)}")
        except aiohttp.ServerDisconnectedError as exc:
            return self._fail(res, "error", f"POST {url}: server disconnected ({exc}); {_progress(res)}")
        except (aiohttp.ClientError, OSError) as exc:
            return self._fail(res, "error", f"POST {url}: {type(exc).__name__}: {exc}; {_progress(res)}")
        except _IdleTimeout:
            return self._fail(res, "timeout", f"{self._idle_message(url, res)}; {_progress(res)}")
        except _StreamError as exc:
            return self._fail(res, "error", f"POST {url}: {exc}; {_progress(res)}")
        except Exception as exc:  # never lose a request to an unexpected exception
            return self._fail(res, "error", f"POST {url}: unexpected {type(exc).__name__}: {exc}; {_progress(res)}")
        res.t_end_ms = _now_ms()
        return res

    async def prefill_handoff(self, prompt_token_ids: list[int], *, request_id: str | None = None
                              ) -> CompletionResult:
        """Disaggregated serving, step 1: prefill only, and get the KV hand-off for a decode server.

        One non-streamed request with ``max_tokens=1`` and vLLM's NixlConnector
        ``kv_transfer_params`` asking for remote decode; the answer's
        ``kv_transfer_params`` (remote engine, block ids, host, port) go to the
        decode server with the same prompt. Never raises except on cancellation;
        a missing hand-off is an error result.
        """
        rid = request_id or uuid.uuid4().hex
        url = self.completions_url
        res = CompletionResult(rid, "ok", None, None, 0, None, _now_ms(), None, None)
        body = {"model": self.model, "prompt": list(prompt_token_ids), "max_tokens": 1, "temperature": 0,
                "ignore_eos": True, "stream": False,
                "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False,
                                       "remote_engine_id": None, "remote_block_ids": None,
                                       "remote_host": None, "remote_port": None}}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._get_session().post(url, json=body, timeout=timeout,
                                                    headers={"X-Request-Id": rid, **self.headers}) as resp:
                    res.http_status = resp.status
                    text = await resp.text(errors="replace")
            if resp.status != 200:
                return self._fail(res, "error", f"POST {url} (prefill) answered HTTP {resp.status}: {_brief(text)}")
            data = json.loads(text)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return self._fail(res, "timeout", f"POST {url} (prefill): no answer within {self.timeout_s} s")
        except (aiohttp.ClientError, OSError) as exc:
            return self._fail(res, "error", f"POST {url} (prefill): {type(exc).__name__}: {exc}")
        except json.JSONDecodeError as exc:
            return self._fail(res, "error", f"POST {url} (prefill): malformed JSON ({exc})")
        res.t_end_ms = res.t_first_token_ms = res.t_last_token_ms = _now_ms()
        usage = data.get("usage") if isinstance(data, dict) else None
        if isinstance(usage, dict):
            res.usage_reported = True
            res.prompt_tokens = usage.get("prompt_tokens")
            res.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and details.get("cached_tokens") is not None:
                res.cached_tokens = int(details["cached_tokens"])
        params = data.get("kv_transfer_params") if isinstance(data, dict) else None
        if not isinstance(params, dict):
            return self._fail(res, "error", f"POST {url} (prefill): no kv_transfer_params in the answer "
                              "(is the server running with a NixlConnector kv-transfer-config?)")
        res.kv_transfer_params = params
        return res

    def _idle_message(self, url: str, res: CompletionResult) -> str:
        where = ("before the response" if res.http_status is None else
                 "before the first token" if res.t_first_token_ms is None else "mid-stream")
        return f"POST {url}: no data for {self.idle_timeout_s:g} s {where} (idle timeout)"

    @staticmethod
    def _fail(res: CompletionResult, status: Status, message: str) -> CompletionResult:
        res.status = status
        res.error = message
        res.t_end_ms = _now_ms()
        return res

    async def _read_stream(self, resp: aiohttp.ClientResponse, res: CompletionResult,
                           on_token: Callable[[float, int], None] | None) -> None:
        """Consume the SSE body into ``res``; raises ``_StreamError`` if it is not a complete stream."""
        data_lines: list[str] = []
        event_t = 0.0
        done = False
        usage_so_far = 0  # running completion_tokens from usage (continuous stats, then the final chunk)
        usage_seen = False
        finish_only_t: float | None = None  # a chunk with empty text and a finish_reason: a token or just the end?

        def handle(payload: str, t: float) -> bool:
            nonlocal usage_so_far, usage_seen, finish_only_t
            if payload.strip() == "[DONE]":
                return True
            try:
                chunk = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise _StreamError(f"malformed stream data {_brief(payload)}: {exc}") from None
            if not isinstance(chunk, dict):
                raise _StreamError(f"unexpected stream data {_brief(payload)}")
            if chunk.get("error") is not None or chunk.get("object") == "error":
                err = chunk.get("error", chunk)
                detail = err.get("message", err) if isinstance(err, dict) else err
                raise _StreamError(f"server error in stream: {_brief(str(detail))}")
            usage = chunk.get("usage")
            running = None
            if isinstance(usage, dict):
                res.usage_reported = True
                if usage.get("prompt_tokens") is not None:
                    res.prompt_tokens = int(usage["prompt_tokens"])
                if usage.get("completion_tokens") is not None:
                    running = int(usage["completion_tokens"])
                details = usage.get("prompt_tokens_details")
                if isinstance(details, dict) and details.get("cached_tokens") is not None:
                    res.cached_tokens = int(details["cached_tokens"])
            if chunk.get("kv_transfer_params") is not None:
                res.kv_transfer_params = chunk["kv_transfer_params"]
            choices = chunk.get("choices") or []
            n_tok = 0
            carried = False
            for ch in choices:
                if not isinstance(ch, dict):
                    continue
                if ch.get("finish_reason"):
                    res.finish_reason = ch["finish_reason"]
                text = ch.get("text")
                if text is None:  # tolerate chat-style deltas
                    text = (ch.get("delta") or {}).get("content") or ""
                ids = ch.get("token_ids")
                if ids:
                    n_tok += len(ids)
                    carried = True
                elif text:
                    n_tok += 1
                    carried = True
                elif not ch.get("finish_reason"):
                    n_tok += 1          # a token whose text is an incomplete UTF-8 sequence
                    carried = True
                else:
                    finish_only_t = t   # decided at the end, against usage
            if running is not None and self.continuous_usage and choices:
                # exact per-chunk count from the running usage (covers empty-text tokens too)
                n_tok = running - usage_so_far
                carried = n_tok > 0
            if running is not None:
                usage_so_far = max(usage_so_far, running)
                usage_seen = True
            if carried and n_tok > 0:
                if res.t_first_token_ms is None:
                    res.t_first_token_ms = t
                res.t_last_token_ms = t
                res.token_times_ms.append(t)
                res.chunk_tokens.append(n_tok)
                res.completion_tokens += n_tok
                if on_token is not None:
                    on_token(t, n_tok)
            return False

        idle_s = self.idle_timeout_s
        last_data = time.monotonic()
        while True:
            if idle_s is None:
                raw = await resp.content.readline()
            else:
                try:  # only this read's deadline; the caller's whole-request timeout propagates as it is
                    async with asyncio.timeout(max(0.0, last_data + idle_s - time.monotonic())):
                        raw = await resp.content.readline()
                except TimeoutError:
                    raise _IdleTimeout() from None
            if not raw:
                break
            t = _now_ms()
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:  # blank line: end of one SSE event
                if data_lines:
                    done = handle("\n".join(data_lines), event_t) or done
                    data_lines = []
                continue
            if line.startswith(":"):  # SSE comment / keep-alive: not data, the idle clock keeps running
                continue
            last_data = time.monotonic()
            fld, _, value = line.partition(":")
            if fld == "data":
                if not data_lines:
                    event_t = t
                data_lines.append(value[1:] if value.startswith(" ") else value)
            # other SSE fields (event:, id:, retry:) carry nothing we need
        if data_lines:
            done = handle("\n".join(data_lines), event_t) or done
        if usage_seen:  # the server's total is authoritative (chunks may under-count without running usage)
            if finish_only_t is not None and usage_so_far > res.completion_tokens and (
                    not res.token_times_ms or finish_only_t >= res.token_times_ms[-1]):
                # the finishing chunk carried a token with empty text (vLLM); OpenAI's bare finish chunk is not one
                res.token_times_ms.append(finish_only_t)
                res.chunk_tokens.append(1)
                res.t_last_token_ms = finish_only_t
                if res.t_first_token_ms is None:
                    res.t_first_token_ms = finish_only_t
                if on_token is not None:
                    on_token(finish_only_t, 1)
            res.completion_tokens = usage_so_far
        if not done:
            raise _StreamError("stream ended without [DONE]")


def _brief(text: str, n: int = 300) -> str:
    text = text.strip().replace("\n", " ")
    return repr(text if len(text) <= n else text[:n] + "...")


def _progress(res: CompletionResult) -> str:
    return f"{res.completion_tokens} tokens in {len(res.token_times_ms)} chunks received"
