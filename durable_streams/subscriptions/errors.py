"""Subscription error codes (spec 6 and 7) and the HTTP status of each."""

from __future__ import annotations

from typing import Any

STATUS = {
    "INVALID_REQUEST": 400,
    "SUBSCRIPTION_NOT_FOUND": 404,
    "SUBSCRIPTION_ALREADY_EXISTS": 409,
    "WEBHOOK_URL_REJECTED": 400,
    "TOKEN_INVALID": 401,
    "TOKEN_EXPIRED": 401,
    "FENCED": 409,
    "ALREADY_CLAIMED": 409,
    "NO_PENDING_WORK": 409,
    "INVALID_OFFSET": 409,
    "FORBIDDEN": 403,
    "UNAUTHORIZED": 401,
    "METHOD_NOT_ALLOWED": 405,
}


class SubscriptionError(Exception):
    """A refused subscription request: ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(
        self, code: str, message: str = "", *, status: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.status = status or STATUS.get(code, 400)
        self.extra = extra

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def invalid(message: str) -> SubscriptionError:
    return SubscriptionError("INVALID_REQUEST", message)


def bad_offset(message: str) -> SubscriptionError:
    """A malformed ack offset: 400, the offset is not even well-formed."""
    return SubscriptionError("INVALID_OFFSET", message, status=400)
