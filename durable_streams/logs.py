"""Structured logging of stream requests that failed.

Every failed request to the stream URLs is logged once on the
``durable_streams.requests`` logger, with its facts as attributes of the log
record (``extra``), so a JSON formatter such as python-json-logger turns each
into one machine-readable line:

``event`` (``"request_failed"``), ``http_method``, ``http_path``,
``stream_path``, ``http_status``, ``reason``, ``client_ip``, ``user_agent``,
``duration_ms``.

Levels: 5xx ``ERROR``; refusals and limits (401, 403, 413, 429) ``WARNING``;
other client errors (400, 404, 409, 410, ...) ``INFO``, as they are part of
normal protocol traffic (a reader polling a deleted stream, a producer retry).
"""

from __future__ import annotations

import logging
import time

from django.http import HttpRequest

logger = logging.getLogger("durable_streams.requests")

_WARN = frozenset({401, 403, 413, 429})


def level_for(status: int) -> int:
    if status >= 500:
        return logging.ERROR
    if status in _WARN:
        return logging.WARNING
    return logging.INFO


def request_failed(
    request: HttpRequest, stream_path: str, status: int, reason: str, started: float
) -> None:
    """Log one failed request; ``started`` is its ``time.monotonic()`` start."""
    level = level_for(status)
    if not logger.isEnabledFor(level):
        return
    fields = {
        "event": "request_failed",
        "http_method": request.method,
        "http_path": request.path,
        "stream_path": stream_path,
        "http_status": status,
        "reason": reason,
        "client_ip": request.META.get("REMOTE_ADDR"),
        "user_agent": request.META.get("HTTP_USER_AGENT"),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    logger.log(
        level,
        "%s %s -> %s %s",
        request.method,
        request.path,
        status,
        reason,
        extra=fields,
    )
