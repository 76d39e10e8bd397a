"""Absolute-form request targets (RFC 9112 3.2.2), for ASGI and WSGI.

A server must accept ``POST http://host:port/v1/stream/x HTTP/1.1`` (proxies
send it) as ``POST /v1/stream/x`` with ``Host: host:port``. uvicorn and
gunicorn reduce the target themselves; daphne (ASGI) and Django's
``runserver`` (WSGI) pass the whole URL on as the path, and Django's URL
resolver then answers 404. Wrap the application in :class:`OriginFormMiddleware`
(ASGI) or :class:`OriginFormWSGIMiddleware` (WSGI)::

    from durable_streams.targets import OriginFormMiddleware

    application = OriginFormMiddleware(get_asgi_application())

The lean entry point (:class:`durable_streams.asgi.StreamsASGIApp`) applies
the same rule itself, to its own paths and to the application it wraps.
This module imports nothing from Django: a WSGI or ASGI module may import it
before Django is set up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?P<authority>[^/?#]*)")


def split_absolute_form(target: str) -> tuple[str, str] | None:
    """``(host, path)`` of an absolute-form target such as
    ``http://user@host:8000/v1/stream/x``; None for any other form.

    ``host`` is the authority without user information ("" if the URL has
    none); ``path`` is what follows it, "/" when nothing does.
    """
    if target.startswith("/"):
        return None
    match = _ABSOLUTE.match(target)
    if match is None:
        return None
    return match["authority"].rpartition("@")[2], target[match.end() :] or "/"


def origin_form(scope: dict) -> dict:
    """An ASGI HTTP ``scope`` with an absolute-form target reduced to its path.

    The target's host replaces the ``Host`` header, as RFC 9112 3.2.2 asks
    of an origin server. Any other scope is returned as it is.
    """
    split = split_absolute_form(scope.get("path", ""))
    if split is None:
        return scope
    host, path = split
    scope = {**scope, "path": path}
    raw = scope.get("raw_path")
    if raw:
        raw_split = split_absolute_form(raw.decode("latin-1"))
        if raw_split is not None:
            scope["raw_path"] = raw_split[1].encode("latin-1")
    if host:
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"host"]
        scope["headers"] = [(b"host", host.encode("latin-1")), *headers]
    return scope


class OriginFormMiddleware:
    """ASGI middleware: absolute-form request targets reach ``app`` in origin form."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            scope = origin_form(scope)
        await self.app(scope, receive, send)


class OriginFormWSGIMiddleware:
    """WSGI middleware: absolute-form request targets reach ``app`` in origin form.

    Needed under servers that put the whole target into ``PATH_INFO``
    (Django's ``runserver``, any ``wsgiref`` server); gunicorn reduces it itself.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        split = split_absolute_form(environ.get("PATH_INFO", ""))
        if split is not None:
            host, path = split
            environ = {**environ, "PATH_INFO": path}
            if host:
                environ["HTTP_HOST"] = host
        return self.app(environ, start_response)
