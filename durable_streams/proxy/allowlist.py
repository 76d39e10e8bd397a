"""Upstream URL allowlist (spec section 6).

``DURABLE_STREAMS["PROXY_ALLOWED_UPSTREAMS"]`` is a list of URL prefixes:

* ``https://api.openai.com/v1/`` allows that scheme, host and port (the
  scheme's default when none is written) and every path under ``/v1/``;
* a path without a trailing slash matches itself and everything below it
  (``https://h/v1`` allows ``/v1`` and ``/v1/chat``, not ``/v1beta``);
* a host written ``*.example.com`` allows every subdomain of example.com
  (not example.com itself).

Scheme and host compare case-insensitively, paths exactly. A URL with
credentials (``user@host``) never matches. An empty list allows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from ..conf import ds_settings

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A parsed absolute http(s) URL."""

    scheme: str
    host: str
    port: int
    path: str


def parse(url: str) -> Target | None:
    """The URL's parts, or None unless it is an absolute http(s) URL without credentials."""
    if not url or any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if port == 0:
        return None
    # Servers resolve dot segments: "/v1/../admin" must not pass as under "/v1/".
    segments = parts.path.lower().replace("%2e", ".").split("/")
    if any(seg in (".", "..") for seg in segments):
        return None
    return Target(scheme, host, port or _DEFAULT_PORTS[scheme], parts.path or "/")


def _matches(pattern: str, target: Target) -> bool:
    wildcard = False
    host_part = pattern.split("://", 1)[-1].split("/", 1)[0]
    if host_part.startswith("*."):
        wildcard = True
        pattern = pattern.replace("*.", "wildcard.", 1)
    allowed = parse(pattern)
    if allowed is None:
        return False
    if (allowed.scheme, allowed.port) != (target.scheme, target.port):
        return False
    if wildcard:
        suffix = allowed.host[len("wildcard") :]  # ".example.com"
        if not target.host.endswith(suffix) or len(target.host) == len(suffix):
            return False
    elif allowed.host != target.host:
        return False
    prefix = allowed.path
    if prefix.endswith("/"):
        return target.path.startswith(prefix)
    return target.path == prefix or target.path.startswith(prefix + "/")


def is_allowed(target: Target, patterns: list[str]) -> bool:
    return any(_matches(pattern, target) for pattern in patterns)


def invalid_patterns(patterns: object) -> list[str]:
    """Entries that are not patterns (for the system check)."""
    if not isinstance(patterns, (list, tuple)):
        return [repr(patterns)]
    return [
        repr(p)
        for p in patterns
        if not isinstance(p, str) or parse(p.replace("*.", "wildcard.", 1)) is None
    ]


def allow_localhost() -> bool:
    """The SSRF development exception for upstreams on loopback
    (``PROXY_ALLOW_LOCALHOST``; None follows ``DEBUG``)."""
    value = ds_settings.PROXY_ALLOW_LOCALHOST
    return bool(settings.DEBUG) if value is None else value
