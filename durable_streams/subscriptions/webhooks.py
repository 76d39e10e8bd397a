"""Sending one webhook request, and the retry schedule (spec 7.1, 12.8).

The subscription engine decides *what* to deliver and *when*; this module
sends it. The interface:

* ``await deliver(url, payload)`` signs the JSON ``payload`` with the active key
  (:mod:`.signing`) and POSTs it to ``url``. It never raises for network or
  HTTP failures: it returns an :class:`Outcome`. ``ok`` is a 2xx answer;
  ``done`` is an ok answer whose body is a JSON object with ``"done": true``
  (the engine then auto-acks the wake snapshot and releases the lease).
* On a failed outcome the engine persists the schedule on the subscription row
  in the same transaction that records the failure: ``attempts += 1``,
  ``next_attempt_at = next_attempt_at(attempts, now)``, ``status = "failed"``,
  ``last_error = outcome.error``. On an ok one: ``attempts = 0``,
  ``next_attempt_at = None``, ``status = "active"``. Because the schedule is in
  the row, a restarted process (or another one) resumes it where it was.

Sending runs in whatever event loop calls it: the server processes' loops and
the ``streams deliver`` worker's. Each loop has its own connection pool.
Connections go through :func:`.ssrf.backend` (resolved addresses
checked, the checked address connected) and redirects are never followed: a
3xx answer is a failed attempt. Timeouts: ``WEBHOOK_TIMEOUT`` seconds (default
10) for the whole request, response included; at most
:data:`MAX_RESPONSE_BYTES` of the answer are read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import weakref
from dataclasses import dataclass
from typing import Any

import httpcore
from django.http import HttpResponse

from .. import executor
from ..conf import ds_settings
from . import signing, ssrf

MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 10.0
# Exponential backoff (spec 7.1): 1 s doubling up to 60 s, each delay +-20 %.
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
JITTER = 0.2
USER_AGENT = b"django-durable-streams webhook"
# Cache-Control max-age of the JWK Set (spec 6.5). Retired keys stay published
# far longer than this (signing.KEY_CACHE_SECONDS + the replay window).
JWKS_MAX_AGE = 300


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery attempt."""

    ok: bool
    done: bool = False
    status: int | None = None
    error: str | None = None


def retry_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1, 2, 4 ... 60 s,
    each within +-20 %)."""
    base = min(FIRST_DELAY * 2 ** max(0, failures - 1), MAX_DELAY)
    return base * (1 + JITTER * (rng or random).uniform(-1.0, 1.0))


def next_attempt_at(failures: int, now: dt.datetime) -> dt.datetime:
    """When to try again after the ``failures``-th consecutive failure."""
    return now + dt.timedelta(seconds=retry_delay(failures))


def encode(payload: Any) -> bytes:
    """The exact body bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def timeout() -> float:
    return ds_settings.WEBHOOK_TIMEOUT


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpcore.AsyncConnectionPool] = (
    weakref.WeakKeyDictionary()
)


def _pool() -> httpcore.AsyncConnectionPool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = httpcore.AsyncConnectionPool(
            network_backend=ssrf.backend(),
            max_connections=100,
            keepalive_expiry=30.0,
        )
        _pools[loop] = pool
    return pool


async def close_pool() -> None:
    """Close this loop's connections (worker shutdown, tests)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.aclose()


def jwks_response() -> HttpResponse:
    """``GET {stream root}/__ds/jwks.json`` (spec 6.5). Sync: reads the key table."""
    response = HttpResponse(
        json.dumps(signing.jwks(), separators=(",", ":")),
        content_type="application/jwk-set+json",
    )
    response["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


def _is_done(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("done") is True


async def deliver(url: str, payload: Any, *, key: signing.SigningKey | None = None) -> Outcome:
    """POST the signed ``payload`` to ``url``; see the module docstring."""
    try:
        ssrf.check_webhook_url(url)  # the rules may have changed since creation
    except ssrf.UnsafeWebhookURL as exc:
        return Outcome(ok=False, error=f"refused by SSRF rules: {exc}")
    body = encode(payload)
    if key is None:
        key = await executor.run(signing.active_key)
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Webhook-Signature", key.sign(body).encode("ascii")),
        (b"User-Agent", USER_AGENT),
    ]
    limit = timeout()
    per_phase = {"connect": limit, "read": limit, "write": limit, "pool": limit}
    try:
        async with asyncio.timeout(limit):
            async with _pool().stream(
                "POST", url, headers=headers, content=body, extensions={"timeout": per_phase}
            ) as response:
                received = bytearray()
                async for chunk in response.aiter_stream():
                    received += chunk
                    if len(received) > MAX_RESPONSE_BYTES:
                        break
    except TimeoutError:
        return Outcome(ok=False, error=f"no answer within {limit:g} s")
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
    except httpcore.UnsupportedProtocol as exc:
        return Outcome(ok=False, error=str(exc)[:500])
    status = response.status
    if not 200 <= status < 300:
        return Outcome(ok=False, status=status, error=f"HTTP {status}")
    return Outcome(ok=True, done=_is_done(bytes(received)), status=status)
