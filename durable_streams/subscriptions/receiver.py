"""Verifying webhooks on the receiving end (spec 7.1, 12.10), for any Django project.

A project that receives Durable Streams webhooks needs only this module (and
``pip install "django-durable-streams[receiver]"`` for PyJWT, which fetches
and caches the JWK Set); it does not need the app in ``INSTALLED_APPS``::

    from durable_streams.subscriptions.receiver import verify_webhook

    @verify_webhook("https://streams.example/v1/stream/__ds/jwks.json",
                    subscriptions={"orders"})
    def orders_hook(request):
        wake = request.webhook.payload      # the verified JSON body
        ...
        return JsonResponse({"done": True})

The decorator answers before the view runs: ``400`` for a missing or
malformed signature header or body, ``401`` for a bad signature, an unknown
``kid`` or a timestamp outside the replay window, ``403`` for a
``subscription_id`` the view does not expect, ``503`` when the JWK Set cannot
be fetched (the server retries the delivery later). The view is exempt from
CSRF (the signature authenticates the request); sync and async views both work.

The JWKS URL is configuration, never taken from the request: it is the trust
anchor. Keys are selected by the ``kid`` of each signature; an unknown ``kid``
refetches the set (at most every ``refresh_cooldown`` seconds), so a server's
key rotation needs nothing on this side. A signature stays acceptable for the
whole replay window, so handle each ``wake_id`` once (retries re-send it too).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from asgiref.sync import sync_to_async
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

HEADER = "Webhook-Signature"
_HEADER_RE = re.compile(r"\At=(\d{1,12}),kid=([A-Za-z0-9_.-]{1,128}),ed25519=([A-Za-z0-9_-]{86})\Z")
DEFAULT_REPLAY_WINDOW = 300


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WebhookRejected(Exception):
    """A webhook request that must not be processed; ``status`` is the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class VerifiedWebhook:
    """A webhook whose signature checked out: ``request.webhook`` in a decorated view."""

    payload: dict
    kid: str
    timestamp: int
    body: bytes


class WebhookVerifier:
    """Checks ``Webhook-Signature`` headers against a server's JWK Set."""

    def __init__(
        self,
        jwks_url: str,
        *,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        cache_seconds: float = 300,
        refresh_cooldown: float = 30,
        timeout: float = 5,
    ) -> None:
        self.replay_window = replay_window
        self._client = jwt.PyJWKClient(
            jwks_url,
            cache_keys=False,
            lifespan=cache_seconds,
            cooldown_duration=refresh_cooldown,
            timeout=timeout,
        )

    def _public_key(self, kid: str) -> Ed25519PublicKey:
        try:
            jwk = self._client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise WebhookRejected(503, "cannot fetch the webhook signing keys") from exc
        except jwt.PyJWKClientError as exc:
            raise WebhookRejected(401, "unknown webhook signing key") from exc
        if not isinstance(jwk.key, Ed25519PublicKey):
            raise WebhookRejected(401, "webhook signing key is not an Ed25519 key")
        return jwk.key

    def verify(self, body: bytes, header: str | None, *, now: float | None = None) -> tuple:
        """``(kid, timestamp)`` of a valid signature of ``body``; raises
        :class:`WebhookRejected` otherwise."""
        if not header:
            raise WebhookRejected(400, f"missing {HEADER} header")
        match = _HEADER_RE.match(header.strip())
        if match is None:
            raise WebhookRejected(400, f"malformed {HEADER} header")
        t, kid, signature = match.groups()
        now = time.time() if now is None else now
        if abs(now - int(t)) > self.replay_window:
            raise WebhookRejected(401, "webhook timestamp is outside the replay window")
        key = self._public_key(kid)
        try:
            key.verify(_b64url_decode(signature), t.encode("ascii") + b"." + body)
        except (InvalidSignature, ValueError):
            raise WebhookRejected(401, "webhook signature does not verify") from None
        return kid, int(t)

    def verify_request(
        self, request: HttpRequest, subscriptions: frozenset[str] | None = None
    ) -> VerifiedWebhook:
        """The verified webhook of a Django request; raises :class:`WebhookRejected`."""
        if request.method != "POST":
            raise WebhookRejected(405, "webhooks are POST requests")
        body = request.body
        kid, timestamp = self.verify(body, request.headers.get(HEADER))
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected(400, "webhook body is not JSON") from None
        if not isinstance(payload, dict):
            raise WebhookRejected(400, "webhook body is not a JSON object")
        if subscriptions is not None and payload.get("subscription_id") not in subscriptions:
            raise WebhookRejected(403, "webhook for an unexpected subscription")
        return VerifiedWebhook(payload, kid, timestamp, body)


def _refusal(exc: WebhookRejected) -> HttpResponse:
    return JsonResponse({"error": exc.message}, status=exc.status)


def verify_webhook(
    jwks_url: str,
    *,
    subscriptions: Iterable[str] | None = None,
    replay_window: int = DEFAULT_REPLAY_WINDOW,
    **options: Any,
) -> Callable:
    """View decorator: run the view only for a verified webhook, as ``request.webhook``.

    ``subscriptions`` limits the accepted ``subscription_id`` values (spec 12.10
    asks receivers shared by several subscriptions to check it); ``options`` go
    to :class:`WebhookVerifier`.
    """
    verifier = WebhookVerifier(jwks_url, replay_window=replay_window, **options)
    expected = None if subscriptions is None else frozenset(subscriptions)

    def decorator(view: Callable) -> Callable:
        if asyncio.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                try:
                    # The JWK Set fetch blocks: keep it off the event loop.
                    request.webhook = await sync_to_async(verifier.verify_request)(
                        request, expected
                    )
                except WebhookRejected as exc:
                    return _refusal(exc)
                return await view(request, *args, **kwargs)

            return csrf_exempt(async_wrapped)

        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            try:
                request.webhook = verifier.verify_request(request, expected)
            except WebhookRejected as exc:
                return _refusal(exc)
            return view(request, *args, **kwargs)

        return csrf_exempt(wrapped)

    return decorator
