"""A lean ASGI entry point for the stream URLs.

``include("durable_streams.urls")`` serves streams through Django's full
request handling: URL resolution, every middleware, and an executor thread
per request for the sync parts of that stack. For a server whose job is
mostly streams, :class:`StreamsASGIApp` answers the stream prefix directly:
it builds the same ``HttpRequest``, calls the same view (access policy
included) and sends its response, skipping only Django's middleware chain.
Everything else goes to the wrapped application::

    from django.core.asgi import get_asgi_application
    from durable_streams.asgi import StreamsASGIApp

    django_app = get_asgi_application()
    application = StreamsASGIApp(django_app, prefix="/v1/stream/")

Because middleware does not run for stream URLs, ``request.user`` and
``request.session`` are not set there: policies must authenticate from the
request itself (tokens, signed URLs, DRF token or basic authentication).

Absolute-form request targets (``POST http://host/v1/stream/x``) are reduced
to their path first (:mod:`durable_streams.targets`), for the stream prefix
and for the wrapped application alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse

from .conf import ds_settings
from .exceptions import PayloadTooLarge
from .targets import origin_form
from .views import EventStreamResponse, error_response, serve

logger = logging.getLogger("durable_streams.requests")

ASGIApp = Callable[
    [dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]
]


class StreamsASGIApp:
    """Serve ``prefix`` straight from ASGI; pass everything else to ``app``."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1/stream/") -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError("prefix must start and end with '/'")
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            scope = origin_form(scope)
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or path == self.prefix:
            await self.app(scope, receive, send)
            return
        stream_path = path[len(self.prefix) :]
        # Passed on, never bound here: an SSE response lives for as long as
        # its reader, and keeps only what it still has to send.
        await _send_response(await _respond(scope, receive, stream_path), receive, send)


async def _respond(scope: dict, receive, stream_path: str) -> HttpResponse | None:
    """The view's response to the request, or None if the client left before
    its body was complete (nothing it sent may be stored, and there is no
    one to answer)."""
    body, state = await _read_body(receive, ds_settings.MAX_APPEND_SIZE)
    # Every view has read the body by the time it answers: close it now,
    # not when a streaming response ends.
    with body:
        if state == "disconnected":
            return None
        request = ASGIRequest(scope, body)
        if state == "too large":
            limit = ds_settings.MAX_APPEND_SIZE
            return error_response(request, PayloadTooLarge(f"body exceeds {limit} bytes"))
        try:
            return await serve(request, stream_path)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            return HttpResponse(
                "internal error\n", status=500, content_type="text/plain; charset=utf-8"
            )


async def _read_body(receive, limit: int):
    """The request body, spooled to disk past 1 MB, and how reading ended:
    "complete", "too large" (stopped past ``limit``) or "disconnected"."""
    body = tempfile.SpooledTemporaryFile(max_size=1024 * 1024, mode="w+b")
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body, "disconnected"
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return body, "too large"
        body.write(chunk)
        if not message.get("more_body", False):
            break
    body.seek(0)
    return body, "complete"


def _headers(response: HttpResponse) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.output(header="").strip().encode("latin-1")))
    return headers


async def _send_response(response: HttpResponse | None, receive, send) -> None:
    if response is None:
        return
    start = {"type": "http.response.start", "status": response.status_code}
    start["headers"] = _headers(response)
    if not response.streaming:
        await send(start)
        await send({"type": "http.response.body", "body": response.content})
        return
    chunks = (
        response.events if isinstance(response, EventStreamResponse) else response.streaming_content
    )
    # An idle SSE reader may wait for hours: from here on hold only the
    # chunks, not the response (its headers) nor the start message.
    del response
    # Stop the moment the client goes away, so its waiter is cancelled and
    # nothing keeps reading for nobody: a watcher task cancels this one,
    # which streams itself (one task per reader, not two).
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(task)
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    watcher.add_done_callback(watch.disconnected)
    try:
        await send(start)
        del start
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:
            # Headers are out: the one way left to report it is to end the
            # response, never to leave the client waiting on it.
            logger.exception("stream response failed")
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        # Ours (the client left) is absorbed; anyone else's goes on.
        if not watch.left or task.uncancel() > 0:
            raise
    except Exception:
        logger.error("stream response failed", exc_info=True)
    finally:
        watch.streaming = False
        if not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        close = getattr(chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


class _Watch:
    """Cancels a streaming task once its client disconnects, while it streams."""

    __slots__ = ("left", "streaming", "task")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.streaming = True
        self.left = False

    def disconnected(self, _watcher: asyncio.Future) -> None:
        if self.streaming:
            self.left = True
            self.task.cancel()


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
