"""The upstream request: header filtering, SSRF-guarded connections, timeouts."""

from __future__ import annotations

import asyncio
import weakref
from urllib.parse import urlsplit

import httpcore
from django.http import HttpRequest

from .. import ssrf
from ..conf import ds_settings
from . import allowlist
from .errors import ProxyError

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

# Spec 5.2: hop-by-hop headers, and the ones the proxy itself consumes or sets.
STRIPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        "upstream-url",
        "upstream-method",
        "upstream-authorization",
        # Recomputed by the HTTP client for the body it sends.
        "content-length",
    }
)


def upstream_headers(request: HttpRequest) -> list[tuple[str, str]]:
    """The client's headers as the upstream gets them (spec 5.1 and 5.2)."""
    # Headers the client named in Connection are hop-by-hop too (RFC 9110 7.6.1).
    named = {
        token.strip().lower()
        for token in request.headers.get("Connection", "").split(",")
        if token.strip()
    }
    headers = [
        (name, value)
        for name, value in request.headers.items()
        if name.lower() not in STRIPPED and name.lower() not in named
    ]
    authorization = request.headers.get("Upstream-Authorization")
    if authorization:
        headers.append(("Authorization", authorization))
    return headers


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpcore.AsyncConnectionPool] = (
    weakref.WeakKeyDictionary()
)


def _pool() -> httpcore.AsyncConnectionPool:
    """This event loop's connection pool: httpcore never follows redirects and
    reads no proxy settings from the environment; every connection goes
    through the SSRF rules (:class:`durable_streams.ssrf.GuardedBackend`)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = httpcore.AsyncConnectionPool(
            network_backend=ssrf.GuardedBackend(allowlist.allow_localhost),
            max_connections=1000,
            keepalive_expiry=30.0,
        )
        _pools[loop] = pool
    return pool


async def send(method: str, url: str, headers: list, body: bytes) -> httpcore.Response:
    """Send the request and wait for the response headers (spec 8.1); the body
    is left to stream (``aiter_stream()``, then ``aclose()``). Raises
    :class:`ProxyError` with the spec's codes."""
    header_timeout = float(ds_settings.PROXY_HEADER_TIMEOUT)
    timeouts = {
        "connect": header_timeout,
        "write": header_timeout,
        "pool": header_timeout,
        # Between two reads: the body inactivity timeout once headers are in.
        "read": float(ds_settings.PROXY_IDLE_TIMEOUT),
    }
    # httpcore sends only the headers given: Host is the upstream's (spec 5.1).
    host = [("Host", urlsplit(url).netloc)]
    if body or method in ("POST", "PUT", "PATCH"):
        host.append(("Content-Length", str(len(body))))
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in host + headers]
    request = httpcore.Request(
        method, url, headers=encoded, content=body, extensions={"timeout": timeouts}
    )
    try:
        async with asyncio.timeout(header_timeout):
            return await _pool().handle_async_request(request)
    except (TimeoutError, httpcore.TimeoutException):
        raise ProxyError(504, "UPSTREAM_TIMEOUT", "upstream did not respond in time") from None
    except ssrf.SSRFRefused as exc:
        raise ProxyError(403, "UPSTREAM_NOT_ALLOWED", str(exc)) from None
    except Exception as exc:  # network, protocol (h11), TLS: never a 500
        raise ProxyError(502, "UPSTREAM_ERROR", f"upstream request failed: {exc}") from None


def header(response: httpcore.Response, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in response.headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


async def read_limited(response: httpcore.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of an (error) body; the rest is never read."""
    body = b""
    try:
        async for chunk in response.aiter_stream():
            body += chunk
            if len(body) >= limit:
                break
    except httpcore.NetworkError:
        pass
    finally:
        await response.aclose()
    return body[:limit]
