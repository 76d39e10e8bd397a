"""Absolute-form request targets (RFC 9112 3.2.2) reduced to origin form, for
ASGI scopes and WSGI environs (durable_streams.targets)."""

from __future__ import annotations

import pytest

from durable_streams.targets import OriginFormWSGIMiddleware, origin_form, split_absolute_form


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://h:8000/v1/stream/x", ("h:8000", "/v1/stream/x")),
        ("https://user:pw@h/v1/stream/a/b", ("h", "/v1/stream/a/b")),
        ("http://h", ("h", "/")),
        ("HTTP://h/", ("h", "/")),
        ("/v1/stream/http://h/x", None),  # origin form whose path holds a URL
        ("*", None),
        ("v1/stream/x", None),
    ],
)
def test_split_absolute_form(target, expected):
    assert split_absolute_form(target) == expected


def test_asgi_scope_takes_the_targets_path_and_host():
    scope = {
        "type": "http",
        "path": "http://example.com:81/v1/stream/x",
        "raw_path": b"http://example.com:81/v1/stream/x%20y",
        "headers": [(b"host", b"proxy"), (b"accept", b"*/*")],
    }
    reduced = origin_form(scope)
    assert reduced["path"] == "/v1/stream/x"
    assert reduced["raw_path"] == b"/v1/stream/x%20y"
    assert reduced["headers"] == [(b"host", b"example.com:81"), (b"accept", b"*/*")]
    assert scope["path"].startswith("http://")  # the server's scope is left as it was
    origin = {"type": "http", "path": "/v1/stream/x", "headers": [(b"host", b"a")]}
    assert origin_form(origin) is origin


def test_wsgi_environ_takes_the_targets_path_and_host():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        return [b""]

    OriginFormWSGIMiddleware(app)(
        {"PATH_INFO": "http://example.com/v1/stream/x", "HTTP_HOST": "proxy"}, None
    )
    assert (seen["PATH_INFO"], seen["HTTP_HOST"]) == ("/v1/stream/x", "example.com")
