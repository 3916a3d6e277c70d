"""Scrape a live engine's Prometheus ``/metrics`` into plain numbers.

``parse_prometheus(text)`` reads the text exposition format (and OpenMetrics'
superset as far as samples go) into ``{sample name: value}``: comments and
``# TYPE``/``# HELP`` lines are skipped, label sets are summed (vLLM labels
its series by ``model_name`` and ``engine``; one server, one model, so the sum
is the server's value), and histogram buckets and summary quantiles are left
out (their ``_sum`` and ``_count`` samples are kept).

``scrape(base_url)`` fetches ``/metrics`` and returns the engine counters the
validation needs under short, engine-neutral keys (``ENGINE_METRICS``),
taking whichever spelling the server exposes (vLLM V1 names first, then older
vLLM and SGLang ones); ``raw=True`` returns every parsed sample instead.
``delta(before, after)`` turns two scrapes into what happened in between.
``info_labels(text, name)`` reads an info-style metric, whose values are in
its labels (vLLM's ``vllm:cache_config_info{block_size="32",
num_gpu_blocks="...",...} 1.0``); ``fetch_metrics_text`` returns the raw text.

vLLM (V1) counts prefix-cache queries and hits in *tokens*;
``kv_cache_usage_perc`` is a fraction in [0, 1] despite its name.
"""

from __future__ import annotations

import math

import aiohttp

# short key -> candidate exposition names, in order of preference
ENGINE_METRICS: dict[str, tuple[str, ...]] = {
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total",
                             "vllm:prefix_cache_queries"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total",
                          "vllm:prefix_cache_hits"),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
    "preemptions": ("vllm:num_preemptions_total", "vllm:num_preemptions"),
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs"),
    "prompt_tokens": ("vllm:prompt_tokens_total", "sglang:prompt_tokens_total"),
    "generation_tokens": ("vllm:generation_tokens_total", "sglang:generation_tokens_total"),
    "requests_finished": ("vllm:request_success_total",),
    # NIXL prefill -> decode KV transfers (vLLM's NixlConnector, on the side that pulls the KV)
    "kv_transfer_bytes": ("vllm:nixl_bytes_transferred_sum",),
    "kv_transfers": ("vllm:nixl_bytes_transferred_count", "vllm:nixl_xfer_time_seconds_count"),
    "kv_transfer_failures": ("vllm:nixl_num_failed_transfers_total", "vllm:nixl_num_failed_transfers"),
}

# keys that are levels, not running totals: ``delta`` reports their latest value
GAUGES = frozenset({"kv_cache_usage", "running", "waiting"})


class MetricsError(RuntimeError):
    """``/metrics`` could not be fetched or read; the message names the URL."""


def _parse_labels(s: str, i: int, line: str) -> tuple[dict[str, str], int]:
    """Parse ``{a="x",b="y"}`` starting at s[i] == '{'; returns (labels, index after '}')."""
    labels: dict[str, str] = {}
    i += 1
    n = len(s)
    while True:
        while i < n and s[i] in " \t,":
            i += 1
        if i >= n:
            raise ValueError(f"unterminated label set in {line!r}")
        if s[i] == "}":
            return labels, i + 1
        eq = s.find("=", i)
        if eq < 0:
            raise ValueError(f"label without '=' in {line!r}")
        name = s[i:eq].strip()
        i = eq + 1
        while i < n and s[i] in " \t":
            i += 1
        if i >= n or s[i] != '"':
            raise ValueError(f"label value not quoted in {line!r}")
        i += 1
        buf = []
        while i < n and s[i] != '"':
            if s[i] == "\\" and i + 1 < n:
                nxt = s[i + 1]
                buf.append("\n" if nxt == "n" else nxt)
                i += 2
            else:
                buf.append(s[i])
                i += 1
        if i >= n:
            raise ValueError(f"unterminated label value in {line!r}")
        labels[name] = "".join(buf)
        i += 1


def parse_prometheus(text: str, *, strict: bool = False) -> dict[str, float]:
    """``{sample name: value summed over label sets}``; buckets and quantiles are skipped.

    Malformed lines are skipped, or raise ``ValueError`` with ``strict=True``.
    """
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            brace = line.find("{")
            space = min((p for p in (line.find(" "), line.find("\t")) if p >= 0), default=-1)
            labels: dict[str, str] = {}
            if brace >= 0 and (space < 0 or brace < space):
                name = line[:brace]
                labels, end = _parse_labels(line, brace, raw)
                rest = line[end:].split()
            else:
                if space < 0:
                    raise ValueError(f"sample without a value: {raw!r}")
                name = line[:space]
                rest = line[space:].split()
            if not name or not rest:
                raise ValueError(f"malformed sample: {raw!r}")
            value = float(rest[0])
        except ValueError:
            if strict:
                raise
            continue
        if "le" in labels or "quantile" in labels:
            continue
        if math.isnan(value):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def engine_metrics(samples: dict[str, float]) -> dict[str, float]:
    """Pick ``ENGINE_METRICS`` out of parsed samples (keys the server does not expose are absent)."""
    out = {}
    for key, names in ENGINE_METRICS.items():
        for name in names:
            if name in samples:
                out[key] = samples[name]
                break
    return out


def info_labels(text: str, name: str) -> dict[str, str] | None:
    """Label dict of the first sample named ``name`` in exposition ``text`` (None: no such sample).

    For info-style metrics, which carry their values as labels, e.g.
    ``info_labels(text, "vllm:cache_config_info")["num_gpu_blocks"]``. Values
    stay strings (vLLM writes unset ones as ``"None"``). Malformed lines are skipped.
    """
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name):]
        if rest.startswith("{"):
            try:
                labels, _ = _parse_labels(line, len(name), raw)
            except ValueError:
                continue
            return labels
        if rest[:1] in (" ", "\t"):
            return {}
    return None


async def fetch_metrics_text(base_url: str, *, session: aiohttp.ClientSession | None = None,
                             timeout_s: float = 10.0) -> str:
    """GET ``{base_url}/metrics`` and return the text; ``MetricsError`` naming the URL on failure."""
    url = base_url.rstrip("/") + "/metrics"
    own = session is None
    sess = session or aiohttp.ClientSession()
    try:
        async with sess.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise MetricsError(f"GET {url} answered HTTP {resp.status}: {text[:300]!r}")
    except (aiohttp.ClientError, OSError) as exc:
        raise MetricsError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise MetricsError(f"GET {url} timed out after {timeout_s} s") from exc
    finally:
        if own:
            await sess.close()
    return text


async def scrape(base_url: str, *, session: aiohttp.ClientSession | None = None, timeout_s: float = 10.0,
                 raw: bool = False) -> dict[str, float]:
    """GET ``{base_url}/metrics``: ``engine_metrics`` of it (or every sample with ``raw=True``).

    Raises ``MetricsError`` naming the URL when the endpoint is unreachable,
    answers non-200, or times out.
    """
    samples = parse_prometheus(await fetch_metrics_text(base_url, session=session, timeout_s=timeout_s))
    return samples if raw else engine_metrics(samples)


def delta(before: dict[str, float], after: dict[str, float], *, gauges=GAUGES) -> dict[str, float]:
    """What changed between two scrapes, for keys present in both.

    Counters give ``after - before``; a counter that went down (the server
    restarted) gives ``after``, as Prometheus' ``increase`` does. Keys in
    ``gauges`` give their ``after`` value.
    """
    out = {}
    for key, b in before.items():
        if key not in after:
            continue
        a = after[key]
        out[key] = a if key in gauges or a < b else a - b
    return out
