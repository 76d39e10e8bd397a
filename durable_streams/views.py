"""The protocol over HTTP: PUT, POST, GET (catch-up, long-poll, SSE), HEAD, DELETE.

One async view serves every stream URL. Request parsing and response headers
live here; every stored byte goes through :mod:`durable_streams.storage`, run
on database threads so the event loop never blocks on Postgres.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import content, headers, live, logs, offsets, permissions, sse, storage
from .conf import ds_settings
from .cursor import next_cursor
from .exceptions import BadRequest, LiveNeedsASGI, PayloadTooLarge, StreamError
from .producers import from_headers
from .storage import drivers, groupcommit
from .subscriptions import routes
from .subscriptions import runner as subscriptions_runner

logger = logging.getLogger("durable_streams.requests")

EXPOSED_HEADERS = ", ".join(
    [
        "Stream-Next-Offset",
        "Stream-Cursor",
        "Stream-Up-To-Date",
        "Stream-Closed",
        "Stream-TTL",
        "Stream-Expires-At",
        "Stream-SSE-Data-Encoding",
        "Producer-Epoch",
        "Producer-Seq",
        "Producer-Expected-Seq",
        "Producer-Received-Seq",
        "ETag",
        "Location",
        "Content-Type",
    ]
)
ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
ALLOWED_HEADERS = ", ".join(
    [
        "Content-Type",
        "Authorization",
        "If-None-Match",
        "Stream-TTL",
        "Stream-Expires-At",
        "Stream-Seq",
        "Stream-Closed",
        "Stream-Forked-From",
        "Stream-Fork-Offset",
        "Stream-Fork-Sub-Offset",
        "Producer-Id",
        "Producer-Epoch",
        "Producer-Seq",
    ]
)


@csrf_exempt
async def stream_view(request: HttpRequest, stream_path: str) -> HttpResponse:
    """Serve one stream URL (the view ``durable_streams.urls`` mounts)."""
    if isinstance(request, WSGIRequest):
        # A WSGI server: no lasting event loop, so no pool and no live reads.
        with drivers.on_django_connection():
            return await serve(request, stream_path)
    return await serve(request, stream_path)


async def serve(request: HttpRequest, stream_path: str) -> HttpResponse:
    """Answer one protocol request for the stream at ``stream_path``.

    Shared by the URLconf view and the lean ASGI app (:mod:`durable_streams.asgi`).
    """
    if routes.is_control_path(stream_path) and request.method != "OPTIONS":
        # The reserved control APIs route before any stream path (spec 6).
        response = await routes.serve(request, stream_path)
        _common_headers(request, response)
        return response
    if not drivers.is_on_django_connection():
        # Under WSGI the event loop ends with the request: no engine loop there.
        subscriptions_runner.ensure_running()
    started = time.monotonic()
    handler = _HANDLERS.get(request.method or "")
    try:
        # Checked once here, before access control; storage sees the checked path.
        stream_path = storage.check_path(stream_path)
        if handler is None:
            response: HttpResponse = HttpResponse(
                "method not allowed\n", status=405, content_type="text/plain; charset=utf-8"
            )
            response["Allow"] = ALLOWED_METHODS
        else:
            # Access control (permissions.py): 401/403 before any stream work.
            access = await permissions.authorize(request, stream_path)
            response = await handler(request, stream_path)
            if access is not None:
                access.apply(response)  # Cache-Control: private where reads need auth
    except StreamError as exc:
        response = _error(exc)
        logs.request_failed(request, stream_path, exc.status, exc.message, started)
    except Exception:
        logs.request_failed(request, stream_path, 500, "internal error", started)
        raise
    _common_headers(request, response)
    return response


def _empty(status: int) -> HttpResponse:
    """A response without a body, and so without a Content-Type."""
    response = HttpResponse(status=status)
    del response["Content-Type"]
    return response


def error_response(request: HttpRequest, exc: StreamError) -> HttpResponse:
    """The full response for a protocol error, headers included."""
    response = _error(exc)
    _common_headers(request, response)
    return response


def _error(exc: StreamError) -> HttpResponse:
    response = HttpResponse(
        exc.message + "\n", status=exc.status, content_type="text/plain; charset=utf-8"
    )
    for name, value in exc.headers.items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response


# Statuses that never carry a body: no Content-Length either (RFC 9110 8.6).
_NO_BODY = frozenset({204, 304})


def _common_headers(request: HttpRequest, response: HttpResponse) -> None:
    if (
        not response.streaming
        and response.status_code not in _NO_BODY
        and "Content-Length" not in response
    ):
        # Not left to CommonMiddleware, which a project may not use: without
        # it ASGI servers fall back to chunked encoding.
        response["Content-Length"] = str(len(response.content))
    response["X-Content-Type-Options"] = "nosniff"
    response["Cross-Origin-Resource-Policy"] = ds_settings.CROSS_ORIGIN_RESOURCE_POLICY
    allowed = ds_settings.CORS_ALLOWED_ORIGINS
    origin = headers.get(request, "Origin")
    if any(o != "*" for o in allowed):
        # Vary whatever this request's origin: a cache must never serve a copy
        # made for one origin (with or without the CORS headers) to another.
        response["Vary"] = "Origin"
    if origin and origin != "*" and origin in allowed:
        # Named explicitly: the only origins that may send credentials.
        response["Access-Control-Allow-Origin"] = origin
        if ds_settings.CORS_ALLOW_CREDENTIALS:
            response["Access-Control-Allow-Credentials"] = "true"
    elif "*" in allowed:
        response["Access-Control-Allow-Origin"] = "*"
    else:
        return
    response["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


# --- request parsing -----------------------------------------------------------------


def _read_body(request: HttpRequest) -> bytes:
    limit = ds_settings.MAX_APPEND_SIZE
    declared = request.META.get("CONTENT_LENGTH")
    if declared:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"body exceeds {limit} bytes")
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
    body = request.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"body exceeds {limit} bytes")
    return body


def _meta_response(status: int, meta: storage.StreamMeta) -> HttpResponse:
    """A stream's metadata as PUT and HEAD answer it: headers, no body."""
    response = _empty(status)
    response["Content-Type"] = meta.content_type
    response["Stream-Next-Offset"] = meta.tail_offset
    if meta.closed:
        response["Stream-Closed"] = "true"
    if meta.ttl_seconds is not None:
        response["Stream-TTL"] = str(meta.ttl_seconds)
    if meta.expires_at is not None:
        response["Stream-Expires-At"] = headers.format_expires_at(meta.expires_at)
    response["Cache-Control"] = "no-store"
    return response


def _parse_fork(request: HttpRequest, path: str) -> storage.ForkSpec | None:
    """The fork headers of a PUT, validated (spec 4.2)."""
    source_path = headers.fork_source(
        headers.get(request, "Stream-Forked-From"), request.path, path
    )
    offset = headers.get(request, "Stream-Fork-Offset")
    sub_offset = headers.get(request, "Stream-Fork-Sub-Offset")
    if source_path is None:
        if offset is not None or sub_offset is not None:
            raise BadRequest("Stream-Fork-Offset and -Sub-Offset need Stream-Forked-From")
        return None
    source_path = storage.check_path(source_path)
    position = headers.fork_offset(offset)
    sub = 0
    if sub_offset is not None:
        sub = headers.parse_int("Stream-Fork-Sub-Offset", sub_offset)
        if sub and offset is None:
            raise BadRequest("Stream-Fork-Sub-Offset needs Stream-Fork-Offset")
    return storage.ForkSpec(source_path, position, sub)


# --- PUT: create -----------------------------------------------------------------------


async def _put(request: HttpRequest, path: str) -> HttpResponse:
    content_type = headers.get(request, "Content-Type") or None
    if content_type is not None and not content.valid_content_type(content_type):
        raise BadRequest("invalid Content-Type")
    ttl = headers.parse_ttl(headers.get(request, "Stream-TTL"))
    expires_at = headers.parse_expires_at(headers.get(request, "Stream-Expires-At"))
    if ttl is not None and expires_at is not None:
        raise BadRequest("use Stream-TTL or Stream-Expires-At, not both")
    fork = _parse_fork(request, path)
    body = _read_body(request)
    payload = None
    if body:
        if fork is not None and content_type is None:
            # The type is the source's: learn it to parse the initial body.
            content_type = (await storage.arequire_stream(fork.source_path)).content_type
        body_type = content_type or content.DEFAULT_CONTENT_TYPE
        payload = content.parse_body(body_type, body, allow_empty_json=True)
    created, meta = await storage.acreate_stream(
        path,
        content_type=content_type,
        ttl_seconds=ttl,
        expires_at=expires_at,
        closed=headers.flag(headers.get(request, "Stream-Closed")),
        payload=payload,
        fork=fork,
    )
    response = _meta_response(201 if created else 200, meta)
    if created:
        response["Location"] = request.build_absolute_uri(request.path)
    return response


# --- POST: append / close ----------------------------------------------------------------


async def _post(request: HttpRequest, path: str) -> HttpResponse:
    producer = from_headers(
        headers.get(request, "Producer-Id"),
        headers.get(request, "Producer-Epoch"),
        headers.get(request, "Producer-Seq"),
    )
    body = _read_body(request)
    content_type = headers.get(request, "Content-Type")
    payload = payload_error = None
    if body:
        try:
            payload = content.parse_body(content_type or "", body, allow_empty_json=False)
        except StreamError as exc:
            payload_error = exc
    result = await groupcommit.append(
        storage.AppendRequest(
            path,
            content_type=content_type,
            payload=payload,
            payload_error=payload_error,
            close=headers.flag(headers.get(request, "Stream-Closed")),
            stream_seq=headers.get(request, "Stream-Seq"),
            producer=producer,
        )
    )
    # 200 marks new data from a producer; plain appends and closes answer 204.
    appended = producer is not None and payload is not None and not result.duplicate
    status = 200 if appended else 204
    response = _empty(status)
    response["Stream-Next-Offset"] = result.next_offset
    if result.closed:
        response["Stream-Closed"] = "true"
    if result.producer_epoch is not None:
        response["Producer-Epoch"] = str(result.producer_epoch)
        response["Producer-Seq"] = str(result.producer_seq)
    response["Cache-Control"] = "no-store"
    return response


# --- HEAD and DELETE ------------------------------------------------------------------------


async def _head(request: HttpRequest, path: str) -> HttpResponse:
    return _meta_response(200, await storage.arequire_stream(path))


async def _delete(request: HttpRequest, path: str) -> HttpResponse:
    await storage.adelete_stream(path)
    response = _empty(204)
    response["Cache-Control"] = "no-store"
    return response


async def _options(request: HttpRequest, path: str) -> HttpResponse:
    response = _empty(204)
    response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    requested = headers.get(request, "Access-Control-Request-Headers")
    response["Access-Control-Allow-Headers"] = requested or ALLOWED_HEADERS
    response["Access-Control-Max-Age"] = "86400"
    response["Allow"] = ALLOWED_METHODS
    return response


# --- GET: catch-up, long-poll, SSE ---------------------------------------------------------


async def _get(request: HttpRequest, path: str) -> HttpResponse:
    live = request.GET.get("live")
    given = request.GET.getlist("offset")
    if len(given) > 1:
        raise BadRequest("offset given more than once")
    raw_offset = given[0] if given else None
    if raw_offset == "":
        raise BadRequest("empty offset")
    position = offsets.parse(raw_offset)
    if live is None:
        return await _catch_up(request, path, position)
    if drivers.is_on_django_connection():
        raise LiveNeedsASGI()
    if live == "long-poll":
        if raw_offset is None:
            raise BadRequest("live reads need an offset")
        return await _long_poll(request, path, position)
    if live == "sse":
        if raw_offset is None:
            raise BadRequest("live reads need an offset")
        return await _sse(request, path, position)
    raise BadRequest("live must be long-poll or sse")


def _etag(result: storage.ReadResult) -> str:
    closed = ":c" if result.closed else ""
    return f'"{result.stream.id}:{result.start}:{result.next_position}{closed}"'


def _read_response(result: storage.ReadResult, *, status: int = 200) -> HttpResponse:
    response = HttpResponse(result.body, status=status)
    response["Content-Type"] = result.stream.content_type
    response["Stream-Next-Offset"] = result.next_offset
    if result.up_to_date:
        response["Stream-Up-To-Date"] = "true"
    if result.closed:
        response["Stream-Closed"] = "true"
    return response


async def _catch_up(request: HttpRequest, path: str, position: int | None) -> HttpResponse:
    result = await storage.aread(path, position)
    if position is None:
        # offset=now: a read from the tail (no data), and nothing a cache should keep.
        response = _read_response(result)
        response["Cache-Control"] = "no-store"
        return response
    etag = _etag(result)
    if etag in _if_none_match(request):
        response = _empty(304)
        response["ETag"] = etag
        response["Stream-Next-Offset"] = result.next_offset
        response["Cache-Control"] = ds_settings.CACHE_CONTROL
        return response
    response = _read_response(result)
    response["ETag"] = etag
    response["Cache-Control"] = ds_settings.CACHE_CONTROL
    return response


def _if_none_match(request: HttpRequest) -> list[str]:
    header = headers.get(request, "If-None-Match")
    if not header:
        return []
    return [tag.strip().removeprefix("W/") for tag in header.split(",")]


async def _long_poll(request: HttpRequest, path: str, position: int | None) -> HttpResponse:
    cursor = next_cursor(request.GET.get("cursor"))
    deadline = time.monotonic() + ds_settings.LONG_POLL_TIMEOUT
    async with live.Follow(path, position, until=deadline) as reads:
        async for result in reads:
            if result.units or result.closed:
                break
    result = reads.last
    assert result is not None
    if result.units:
        response = _read_response(result)
        response["ETag"] = _etag(result)
        # offset=now is "future data from whenever you ask": an answer kept
        # by a cache would hand a later reader old data (spec 8).
        response["Cache-Control"] = "no-store" if position is None else ds_settings.CACHE_CONTROL
    else:
        response = _empty(204)
        response["Stream-Next-Offset"] = result.next_offset
        response["Stream-Up-To-Date"] = "true"
        if result.closed:
            response["Stream-Closed"] = "true"
        # A timeout is no answer to keep. The end of a closed stream is final:
        # cacheable, so a cache in front answers every waiting reader of the
        # close with one origin request instead of one each.
        final = result.closed and position is not None
        response["Cache-Control"] = ds_settings.CACHE_CONTROL if final else "no-store"
    if not result.closed:
        response["Stream-Cursor"] = cursor
    return response


class EventStreamResponse(StreamingHttpResponse):
    """An SSE response. ``events`` is its body as it is made, already bytes:
    the lean ASGI app sends it as it comes, without Django's per-chunk
    conversion (``streaming_content``, which the URLconf's handler uses)."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, content_type="text/event-stream")
        self.events = events


async def _sse(request: HttpRequest, path: str, position: int | None) -> HttpResponse:
    follow = live.Follow(
        path,
        position,
        until=time.monotonic() + ds_settings.SSE_MAX_DURATION,
        idle=ds_settings.SSE_KEEPALIVE_INTERVAL,
    )
    # Read before answering: a missing stream or an offset past its tail is a 4xx.
    first = await follow.start()
    text_mode = content.is_text(first.stream.content_type)
    cursor = next_cursor(request.GET.get("cursor"))
    response = EventStreamResponse(sse.events(follow, cursor, text_mode))
    if not text_mode:
        response["Stream-SSE-Data-Encoding"] = "base64"
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


_HANDLERS = {
    "GET": _get,
    "HEAD": _head,
    "PUT": _put,
    "POST": _post,
    "DELETE": _delete,
    "OPTIONS": _options,
}


# --- for views that serve a stream's reads behind their own authorisation -------------

READ_METHODS = "GET, HEAD, OPTIONS"


async def read(request: HttpRequest, stream_path: str) -> HttpResponse:
    """Answer a GET, HEAD or OPTIONS of the stream at ``stream_path`` exactly
    as its URL would (catch-up, long-poll, SSE; offsets and cursors from the
    query), without the access policy: for views that authorise the request
    their own way (``ai.reads.serve_read``, the proxy). Any other method
    answers 405.

    Raises :class:`~durable_streams.exceptions.StreamError` (answer it with
    :func:`error_response`); :func:`finish` adds the common headers.
    """
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        response = HttpResponse(
            "method not allowed\n", status=405, content_type="text/plain; charset=utf-8"
        )
        response["Allow"] = READ_METHODS
        return response
    return await _HANDLERS[request.method](request, storage.check_path(stream_path))


def finish(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Add the headers every stream response carries (CORS, nosniff, Content-Length)."""
    _common_headers(request, response)
    return response
