"""Callback and claim tokens (spec 7.1, 7.2, 12.9).

A token is an HMAC-signed (``SECRET_KEY``), timestamped claim naming one
subscription row, one generation and one wake id. It proves that the bearer
was handed this wake; whether the wake is still current is decided against
the subscription's state by :mod:`.fencing`. Tokens travel only in the
``Authorization: Bearer`` header.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core import signing

from .errors import SubscriptionError

_SALT = "durable_streams.subscriptions.token"
# Generous: the lease, renewed by heartbeats, is what bounds a worker's life.
MAX_AGE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class TokenClaims:
    subscription: int  # the row's primary key: a re-created id never accepts old tokens
    generation: int
    wake_id: str


def issue(subscription: int, generation: int, wake_id: str) -> str:
    """A token for this wake of this subscription row."""
    return signing.dumps(
        {"s": subscription, "g": generation, "w": wake_id}, salt=_SALT, compress=False
    )


def verify(token: str, *, max_age: int = MAX_AGE_SECONDS) -> TokenClaims:
    """The claims of a token this server issued; TOKEN_INVALID / TOKEN_EXPIRED otherwise."""
    try:
        data = signing.loads(token, salt=_SALT, max_age=max_age)
    except signing.SignatureExpired:
        raise SubscriptionError("TOKEN_EXPIRED", "token expired") from None
    except (signing.BadSignature, ValueError, UnicodeError):
        raise SubscriptionError("TOKEN_INVALID", "token invalid") from None
    try:
        claims = TokenClaims(int(data["s"]), int(data["g"]), str(data["w"]))
    except (KeyError, TypeError, ValueError):
        raise SubscriptionError("TOKEN_INVALID", "token invalid") from None
    return claims


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or TOKEN_INVALID."""
    if not authorization or not authorization.startswith("Bearer "):
        raise SubscriptionError("TOKEN_INVALID", "missing or malformed Authorization header")
    token = authorization[len("Bearer ") :].strip()
    if not token:
        raise SubscriptionError("TOKEN_INVALID", "missing or malformed Authorization header")
    return token
