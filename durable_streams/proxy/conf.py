"""The proxy's keys of the ``DURABLE_STREAMS`` setting, with their defaults.

Read on every use (no caching), so ``override_settings`` works.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Upstream URL patterns the proxy may forward to (syntax in allowlist.py);
    # empty refuses every upstream (spec section 6).
    "PROXY_ALLOWED_UPSTREAMS": [],
    # Service secret (query ?secret= or "Authorization: Bearer"), also the key
    # that signs capability URLs. None disables the proxy (every request 401).
    "PROXY_SECRET": None,
    # Lifetime of a capability URL, in seconds (spec 7.4: 24 hours).
    "PROXY_URL_EXPIRES": 24 * 3600,
    # TTL of the streams the proxy creates, in seconds.
    "PROXY_STREAM_TTL": 24 * 3600,
    # Seconds to wait for the upstream's response headers (504 after that).
    "PROXY_HEADER_TIMEOUT": 60.0,
    # Seconds without a byte from upstream before piping stops (spec 8.1).
    "PROXY_IDLE_TIMEOUT": 600.0,
    # Largest upstream error body passed through with a 502, in bytes.
    "PROXY_MAX_ERROR_BODY": 64 * 1024,
    # Largest request body forwarded upstream, in bytes (413 above it).
    "PROXY_MAX_REQUEST_BODY": 10 * 1024 * 1024,
    # Path prefix of the streams the proxy creates.
    "PROXY_STREAM_PREFIX": "proxy/",
    # Piping batches upstream chunks: at most this many seconds, or bytes.
    "PROXY_LINGER": 0.05,
    "PROXY_BATCH_BYTES": 4096,
    # SSRF development exception (durable_streams.ssrf): upstreams on
    # localhost/loopback; None follows settings.DEBUG.
    "PROXY_ALLOW_LOCALHOST": None,
}


def get(name: str) -> Any:
    user = getattr(settings, "DURABLE_STREAMS", None) or {}
    return user.get(name, DEFAULTS[name])


def allow_localhost() -> bool:
    value = get("PROXY_ALLOW_LOCALHOST")
    return bool(settings.DEBUG) if value is None else bool(value)
