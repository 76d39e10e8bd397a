"""Resumable streaming for existing views: ``@resumable`` tees a view's
``StreamingHttpResponse`` into a durable stream.

The view runs unchanged. Its streaming body is written into a new stream (by
the token writer, :class:`durable_streams.ai.writer.TokenWriter`) from a
background task, and the client is served *from that stream*, live, until it
closes. So the generation runs to completion even when the client has gone,
and a client that reconnects gets the rest exactly from where it broke::

    from durable_streams.resumable import resumable

    @resumable
    async def chat(request):
        return StreamingHttpResponse(tokens(request), content_type="text/event-stream")

Every tee'd response tells the client where to resume:

* ``Resume-URL``: the view's URL with ``?resume=<id>``; add ``&offset=<token>``
  (or ``&received=<bytes>``: how many body bytes the client has, counted from
  the start of the generation) to continue from there;
* ``Resume-Offset``: the offset token of the first byte of this response.

For ``text/event-stream`` responses an ``id:`` field naming the stream and the
offset after each event is added to every event, so a browser ``EventSource``
reconnects (``Last-Event-ID``) to the exact event with no client code at all.
A failed or cancelled generation ends the stream with an ``event: error`` (SSE)
or the writer's text marker (other text), and the stream is closed either way.

The reconnect is answered by the decorator without calling the view; put
access checks (``login_required``...) outside it. Needs an ASGI server: the
generation runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from . import content, live, offsets, storage
from .ai.encoding import Text, default_text_error
from .ai.writer import TokenWriter
from .exceptions import StreamError

logger = logging.getLogger("durable_streams.resumable")

__all__ = ["resumable"]

_ID = re.compile(r"[0-9a-f]{32}")
_LAST_EVENT_ID = re.compile(r"ds:([0-9a-f]{32}):([0-9]{16}_[0-9]{16})")
_LINE_END = re.compile(rb"[\r\n]")
# Generations running in this process (strong references keep the tasks alive).
_running: set[asyncio.Task] = set()
# Headers of the view's response that do not describe the tee'd body.
_DROPPED = {"content-length", "content-encoding", "etag", "last-modified"}


def resumable(
    view: Callable | None = None,
    *,
    prefix: str = "resumable/",
    ttl_seconds: int = 24 * 3600,
    sse_ids: bool = True,
    linger: float | None = None,
) -> Callable:
    """Decorate a (sync or async) view so that its streaming responses are resumable.

    ``prefix``: path prefix of the streams created; ``ttl_seconds``: their
    lifetime; ``sse_ids``: add ``id:`` fields to SSE events (for EventSource);
    ``linger``: the writer's batching interval (its setting by default).
    Non-streaming responses pass through untouched.
    """

    def decorate(view: Callable) -> Callable:
        is_async = asyncio.iscoroutinefunction(view)
        call = view if is_async else sync_to_async(view)

        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            resume = _resume_point(request)
            if resume is not None:
                return await _serve_resume(request, prefix, *resume, sse_ids=sse_ids)
            response = await call(request, *args, **kwargs)
            if not isinstance(response, StreamingHttpResponse) or response.status_code != 200:
                return response
            return await _tee(request, response, prefix, ttl_seconds, sse_ids, linger)

        wrapper.csrf_exempt = getattr(view, "csrf_exempt", False)  # type: ignore[attr-defined]
        return wrapper

    return decorate(view) if view is not None else decorate


# --- the first request: tee ---------------------------------------------------------------


def _stored_type(content_type: str) -> str:
    # Raw bytes: never JSON mode, whose appends must be whole JSON values.
    if content.is_json(content_type) or not content.valid_content_type(content_type):
        return content.DEFAULT_CONTENT_TYPE
    return content_type


def _is_sse(content_type: str) -> bool:
    return content.media_type(content_type) == "text/event-stream"


def _sse_error(error: BaseException) -> bytes:
    from .ai.encoding import describe_failure

    data = json.dumps({"error": describe_failure(error)})
    return f"\n\nevent: error\ndata: {data}\n\n".encode()


def _marker(content_type: str):
    if _is_sse(content_type):
        return _sse_error
    if content.media_type(content_type).startswith("text/"):
        return default_text_error
    return None  # binary: no in-band marker would be safe


async def _tee(
    request: HttpRequest,
    response: StreamingHttpResponse,
    prefix: str,
    ttl_seconds: int,
    sse_ids: bool,
    linger: float | None,
) -> HttpResponse:
    stream_id = uuid.uuid4().hex
    content_type = response.get("Content-Type") or content.DEFAULT_CONTENT_TYPE
    writer = TokenWriter(
        prefix + stream_id,
        encoding=Text(_stored_type(content_type), error_marker=_marker(content_type)),
        linger=linger,
        ttl_seconds=ttl_seconds,
        producer_id=f"resumable-{stream_id}",
    )
    await writer.open()
    task = asyncio.get_running_loop().create_task(
        _generate(writer, response), name=f"durable-streams-resumable-{stream_id}"
    )
    _running.add(task)
    task.add_done_callback(_running.discard)

    served = StreamingHttpResponse(
        _tail(prefix + stream_id, stream_id, 0, sse_ids and _is_sse(content_type)),
        status=200,
        content_type=content_type,
    )
    for name, value in response.items():
        if name.lower() not in _DROPPED and name.lower() != "content-type":
            served[name] = value
    _resume_headers(request, served, stream_id, 0)
    return served


async def _generate(writer: TokenWriter, response: StreamingHttpResponse) -> None:
    """Run the view's body to its end into the stream, whoever is listening."""
    try:
        if response.is_async:
            async for chunk in response.streaming_content:
                await writer.write(chunk)
        else:
            iterator = iter(response.streaming_content)
            done = object()
            while (chunk := await asyncio.to_thread(next, iterator, done)) is not done:
                await writer.write(chunk)
    except BaseException as exc:
        await asyncio.shield(writer.fail(exc))
        if not isinstance(exc, Exception):
            raise
    else:
        await writer.finish()
    finally:
        response.close()


# --- the reconnect ----------------------------------------------------------------------------


def _resume_point(request: HttpRequest) -> tuple[str, int] | None:
    """``(stream id, position)`` if the request resumes a tee'd generation."""
    last = request.headers.get("Last-Event-ID", "")
    match = _LAST_EVENT_ID.fullmatch(last.strip())
    if match:
        return match.group(1), offsets.decode(match.group(2))
    stream_id = request.GET.get("resume")
    if stream_id is None:
        return None
    if not _ID.fullmatch(stream_id):
        return stream_id, -1  # answered 404 below
    offset = request.GET.get("offset")
    received = request.GET.get("received")
    if offset is not None and offset != offsets.BEGINNING:
        try:
            return stream_id, offsets.decode(offset)
        except offsets.InvalidOffset:
            return stream_id, -2
    if received is not None:
        return stream_id, int(received) if received.isascii() and received.isdigit() else -2
    return stream_id, 0


async def _serve_resume(
    request: HttpRequest, prefix: str, stream_id: str, position: int, *, sse_ids: bool
) -> HttpResponse:
    if position == -2:
        return _plain(400, "malformed offset or received count")
    try:
        if position < 0:
            raise StreamError("no such generation", status=404)
        meta = await storage.arequire_stream(prefix + stream_id)
    except StreamError:
        return _plain(404, "no such generation (it may have expired)")
    if position > meta.tail:
        return _plain(400, "offset is beyond the end of the generation")
    response = StreamingHttpResponse(
        _tail(meta.path, stream_id, position, sse_ids and _is_sse(meta.content_type)),
        content_type=meta.content_type,
    )
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    _resume_headers(request, response, stream_id, position)
    return response


def _plain(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _resume_headers(
    request: HttpRequest, response: HttpResponse, stream_id: str, position: int
) -> None:
    response["Resume-URL"] = request.build_absolute_uri(f"{request.path}?resume={stream_id}")
    response["Resume-Offset"] = offsets.encode(position)


# --- serving from the stream ---------------------------------------------------------------


async def _tail(path: str, stream_id: str, position: int, sse_ids: bool) -> AsyncIterator[bytes]:
    """The stream's bytes from ``position``, live, until it is closed."""
    state = _IdState()
    try:
        async with live.Follow(path, position) as reads:
            async for result in reads:
                if result.body:
                    body = result.body
                    if sse_ids:
                        body = state.add_ids(body, result.start, stream_id)
                    yield body
    except StreamError:
        return  # deleted or expired while followed


class _IdState:
    """Adds ``id: ds:<stream>:<offset>`` before the blank line that ends each
    SSE event, where offset is just past that blank line's line break."""

    def __init__(self) -> None:
        self.line_empty = True  # nothing but a line break since the last one
        self.after_cr = False

    def add_ids(self, chunk: bytes, start: int, stream_id: str) -> bytes:
        out = bytearray()
        done = 0
        for match in _LINE_END.finditer(chunk):
            i = match.start()
            if i > done:
                self.line_empty, self.after_cr = False, False
            if chunk[i] == 0x0A and self.after_cr and i == done:
                self.after_cr = False  # the LF of a CRLF
                out += chunk[done : i + 1]
                done = i + 1
                continue
            out += chunk[done:i]
            if self.line_empty:
                token = offsets.encode(start + i + 1)
                out += f"id: ds:{stream_id}:{token}\n".encode()
            out += chunk[i : i + 1]
            self.line_empty, self.after_cr = True, chunk[i] == 0x0D
            done = i + 1
        if done < len(chunk):
            self.line_empty, self.after_cr = False, False
            out += chunk[done:]
        return bytes(out)
