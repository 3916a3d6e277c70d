"""Is an engine server up and what does it serve: poll ``/health`` then ``/v1/models`` until ready
(``wait_healthy``), or ask once and fail fast (``served_models``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp


class EndpointError(RuntimeError):
    """An endpoint could not be reached or did not answer as an OpenAI-compatible server."""


async def wait_healthy(base_url: str, timeout_s: float, *, model: str | None = None, interval_s: float = 0.25,
                       is_alive: Callable[[], bool] | None = None,
                       session: aiohttp.ClientSession | None = None) -> list[str]:
    """Poll ``/health`` until 200, then ``/v1/models``; return the served model ids.

    With ``model``, waits until it is among them. Raises ``TimeoutError``
    naming the URL and the last answer seen when ``timeout_s`` runs out, or
    ``RuntimeError`` as soon as ``is_alive()`` says the server process died.
    """
    base = base_url.rstrip("/")
    own = session is None
    sess = session or aiohttp.ClientSession()
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    per_try = aiohttp.ClientTimeout(total=max(0.5, min(5.0, timeout_s)))
    try:
        while True:
            if is_alive is not None and not is_alive():
                raise RuntimeError(f"server for {base} exited before it became healthy (last: {last})")
            try:
                async with sess.get(f"{base}/health", timeout=per_try) as r:
                    if r.status != 200:
                        last = f"GET {base}/health answered HTTP {r.status}"
                    else:
                        async with sess.get(f"{base}/v1/models", timeout=per_try) as m:
                            if m.status != 200:
                                last = f"GET {base}/v1/models answered HTTP {m.status}"
                            else:
                                data = await m.json(content_type=None)
                                ids = [d.get("id") for d in (data or {}).get("data", []) if isinstance(d, dict)]
                                if model is None or model in ids:
                                    return ids
                                last = f"GET {base}/v1/models lists {ids}, not {model!r}"
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{base} not healthy after {timeout_s} s (polled {base}/health; last: {last})")
            await asyncio.sleep(min(interval_s, left))
    finally:
        if own:
            await sess.close()


async def served_models(base_url: str, *, connect_timeout_s: float = 5.0, timeout_s: float = 30.0,
                        session: aiohttp.ClientSession | None = None) -> list[str] | None:
    """One ``GET /v1/models``: the model ids an endpoint serves, at once, without polling.

    Fails fast: an endpoint that refuses the connection, or does not accept it
    within ``connect_timeout_s``, or does not answer within ``timeout_s``,
    raises ``EndpointError`` with a short reason ("cannot connect (...)").
    ``None`` when the server answers but has no model list (HTTP error or not
    the OpenAI format): it is reachable, its models are unknown.
    """
    base = base_url.rstrip("/")
    own = session is None
    sess = session or aiohttp.ClientSession()
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
    try:
        async with sess.get(f"{base}/v1/models", timeout=timeout) as r:
            if r.status != 200:
                return None
            try:
                data = await r.json(content_type=None)
            except ValueError:
                return None
    except asyncio.CancelledError:
        raise
    except aiohttp.ConnectionTimeoutError:
        raise EndpointError(f"cannot connect (no answer to the connect within {connect_timeout_s:g} s)") from None
    except aiohttp.ClientConnectorError as exc:
        raise EndpointError(f"cannot connect ({exc.os_error or exc})") from None
    except TimeoutError:
        raise EndpointError(f"connected, but GET {base}/v1/models got no answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise EndpointError(f"GET {base}/v1/models failed: {type(exc).__name__}: {exc}") from None
    finally:
        if own:
            await sess.close()
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    return [d.get("id") for d in data["data"] if isinstance(d, dict)]
