"""Pre-signed capability URLs and service authentication (spec sections 7 and 9).

A capability URL carries ``expires`` (Unix seconds) and ``signature``:
base64url(HMAC-SHA256(key, "{stream_id}:{expires}")) without padding, the key
derived from ``PROXY_SECRET``. It grants read and abort on that one stream
until it expires. Service authentication is the secret itself, as
``?secret=`` or ``Authorization: Bearer <secret>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from django.http import HttpRequest

from ..conf import ds_settings
from .errors import ProxyError


def _key() -> bytes:
    secret = ds_settings.PROXY_SECRET
    if not secret:
        raise ProxyError(401, "INVALID_SECRET", "the proxy is not configured (PROXY_SECRET)")
    # A key of its own, so a signature never equals anything the secret signs elsewhere.
    return hmac.new(secret.encode(), b"durable-streams-proxy-url", hashlib.sha256).digest()


def signature(stream_id: str, expires: int | str) -> str:
    digest = hmac.new(_key(), f"{stream_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(stream_id: str, expires: int | None = None) -> str:
    """The query string ``expires=...&signature=...`` for ``stream_id``."""
    if expires is None:
        expires = int(time.time()) + int(ds_settings.PROXY_URL_EXPIRES)
    return f"expires={expires}&signature={signature(stream_id, expires)}"


def has_signature(request: HttpRequest) -> bool:
    return "expires" in request.GET or "signature" in request.GET


def verify_signature(request: HttpRequest, stream_id: str) -> None:
    """Raise the spec's 401 unless the request carries a valid, unexpired signature."""
    expires = request.GET.get("expires")
    given = request.GET.get("signature")
    if not expires or not given:
        raise ProxyError(401, "MISSING_SIGNATURE", "pre-signed URL (expires, signature) required")
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        raise ProxyError(401, "SIGNATURE_INVALID", "invalid signature")
    expected = signature(stream_id, expires)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ProxyError(401, "SIGNATURE_INVALID", "invalid signature")
    # Checked after the signature, so a forged URL is never told it merely expired.
    if int(expires) < time.time():
        raise ProxyError(401, "SIGNATURE_EXPIRED", "pre-signed URL has expired")


def verify_service(request: HttpRequest) -> None:
    """Raise the spec's 401 unless the request carries the service secret."""
    token = request.GET.get("secret")
    if not token:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
    if not token:
        raise ProxyError(401, "MISSING_SECRET", "service authentication required")
    secret = ds_settings.PROXY_SECRET
    if not secret or not hmac.compare_digest(token.encode(), secret.encode()):
        raise ProxyError(401, "INVALID_SECRET", "invalid service credentials")
