"""Protocol errors. Each carries the HTTP status and headers it answers with."""

from __future__ import annotations


class StreamError(Exception):
    """A request the protocol rejects; ``status`` is the HTTP status code."""

    status = 400

    def __init__(
        self, message: str, *, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(StreamError):
    status = 400


class Forbidden(StreamError):
    status = 403


class NotFound(StreamError):
    status = 404


class Conflict(StreamError):
    status = 409


class Gone(StreamError):
    status = 410


class PayloadTooLarge(StreamError):
    status = 413


class LiveNeedsASGI(StreamError):
    """501: a live read (long-poll, SSE) reached a WSGI server, which cannot
    hold a waiting reader without holding a worker and connections with it."""

    status = 501

    def __init__(self) -> None:
        super().__init__(
            "live reads (long-poll, SSE) need an ASGI server; this request was served by "
            "WSGI: serve the stream URLs with daphne or uvicorn beside the WSGI site "
            "(see the 'WSGI projects' guide)"
        )


class ServiceUnavailable(StreamError):
    """The database cannot be reached: 503 with ``Retry-After`` (seconds)."""

    status = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
