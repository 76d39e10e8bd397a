"""The lean ASGI entry point (durable_streams.asgi.StreamsASGIApp) driven
in-process with hand-made ASGI messages, as any ASGI server (not only daphne,
which buffers whole bodies) may deliver them."""

from __future__ import annotations

import asyncio
import time

import pytest

from durable_streams import api
from durable_streams.asgi import StreamsASGIApp
from durable_streams.exceptions import NotFound

from ..support import close_executor_connections, unique

pytestmark = pytest.mark.django_db(transaction=True)


class Fallback:
    """The wrapped Django app: records what it was asked to serve."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(app, method: str, path: str, messages: list[dict], headers=()) -> dict:
    """Run one request through ``app``; returns {"status", "headers", "body"}."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    pending = list(messages)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(30)  # nothing more from this client
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 20)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    return {
        "status": start["status"] if start else None,
        "headers": {k.decode().lower(): v.decode() for k, v in (start or {}).get("headers", [])},
        "body": b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    }


@pytest.fixture
async def app():
    yield StreamsASGIApp(Fallback(), prefix="/v1/stream/")
    close_executor_connections()


async def test_paths_outside_the_prefix_go_to_the_wrapped_app(app):
    for path in ("/admin/", "/v1/stream/", "/v1/streamx"):
        response = await call(app, "GET", path, [{"type": "http.request", "body": b""}])
        assert response["status"] == 299
    assert app.app.paths == ["/admin/", "/v1/stream/", "/v1/streamx"]


async def test_a_body_in_several_messages_is_appended_whole(app):
    path = unique()
    await api.acreate_stream(path, content_type="text/plain")
    messages = [
        {"type": "http.request", "body": b"hel", "more_body": True},
        {"type": "http.request", "body": b"lo", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]
    response = await call(
        app, "POST", f"/v1/stream/{path}", messages, [("Content-Type", "text/plain")]
    )
    assert response["status"] == 204
    assert (await api.aread(path)).body == b"hello"


async def test_a_client_that_disconnects_mid_body_appends_nothing(app):
    path = unique()
    await api.acreate_stream(path, content_type="text/plain", data="before|")
    messages = [
        {"type": "http.request", "body": b"partial-", "more_body": True},
        {"type": "http.disconnect"},
    ]
    await call(
        app,
        "POST",
        f"/v1/stream/{path}",
        messages,
        [("Content-Type", "text/plain"), ("Content-Length", "1000")],
    )
    assert (await api.aread(path)).body == b"before|"


async def test_a_client_that_disconnects_mid_body_creates_nothing(app):
    path = unique()
    messages = [
        {"type": "http.request", "body": b"[1,", "more_body": True},
        {"type": "http.disconnect"},
    ]
    await call(app, "PUT", f"/v1/stream/{path}", messages, [("Content-Type", "text/plain")])
    with pytest.raises(NotFound):
        await api.ahead(path)


async def test_an_sse_client_that_leaves_ends_its_response_at_once_and_lets_go_of_its_follow(app):
    from durable_streams import live

    path = unique()
    await api.acreate_stream(path, content_type="text/plain", data="x")
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/v1/stream/{path}",
        "query_string": b"offset=-1&live=sse",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": b""}]
    left = asyncio.Event()

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await left.wait()
        return {"type": "http.disconnect"}

    chunks: list[bytes] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            left.set()  # the client goes once it has the first event

    # The test settings keep an SSE response open for 5 s: ending well
    # before means the disconnect ended it, and normally (not cancelled).
    started = time.monotonic()
    await asyncio.wait_for(app(scope, receive, send), 20)
    assert time.monotonic() - started < 2.5
    assert b"event: data\ndata:x\n" in chunks[0]
    assert live.get_listener().waiting() == 0
