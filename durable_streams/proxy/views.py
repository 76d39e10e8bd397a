"""The proxy's HTTP operations (PROXY_PROTOCOL.md sections 3 and 4).

``POST {proxy-url}`` creates; ``GET``, ``HEAD``, ``PATCH ?action=abort`` and
``DELETE`` act on ``{proxy-url}/{stream-id}``. Reads answer exactly as the
stream URL would (offsets, long-poll, SSE; the same handler serves them), with
``Upstream-Content-Type`` added, and ``Proxy-Outcome`` once piping has ended.
"""

from __future__ import annotations

import logging
import re
import uuid

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .. import views as stream_views
from ..conf import ds_settings
from ..exceptions import NotFound, StreamError
from . import allowlist, pipe, signing, upstream
from .errors import ProxyError

logger = logging.getLogger("durable_streams.proxy")

_STREAM_ID = re.compile(r"[0-9a-f]{32}")

EXPOSED = ", ".join(
    [stream_views.EXPOSED_HEADERS, "Upstream-Content-Type", "Upstream-Status", "Proxy-Outcome"]
)
ALLOWED_HEADERS = ", ".join(
    [
        "Content-Type",
        "Authorization",
        "Upstream-URL",
        "Upstream-Method",
        "Upstream-Authorization",
    ]
)


def _finish(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    # The stream views' common headers (CORS, nosniff, Content-Length), plus ours.
    stream_views.finish(request, response)
    if "Access-Control-Allow-Origin" in response:
        response["Access-Control-Expose-Headers"] = EXPOSED
    return response


def _options(methods: str) -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]
    response["Access-Control-Allow-Methods"] = methods
    response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    response["Access-Control-Max-Age"] = "86400"
    response["Allow"] = methods
    return response


def _not_allowed(methods: str) -> HttpResponse:
    response = ProxyError(405, "METHOD_NOT_ALLOWED", "method not allowed").response()
    response["Allow"] = methods
    return response


@csrf_exempt
async def create_view(request: HttpRequest) -> HttpResponse:
    """``POST {proxy-url}``: create a proxy stream (spec 4.1)."""
    if request.method == "OPTIONS":
        return _finish(request, _options("POST, OPTIONS"))
    if request.method != "POST":
        return _finish(request, _not_allowed("POST, OPTIONS"))
    try:
        response = await _create(request)
    except ProxyError as exc:
        response = exc.response()
    return _finish(request, response)


async def _create(request: HttpRequest) -> HttpResponse:
    signing.verify_service(request)
    url = request.headers.get("Upstream-URL")
    if not url:
        raise ProxyError(400, "MISSING_UPSTREAM_URL", "Upstream-URL header is required")
    method = request.headers.get("Upstream-Method")
    if not method:
        raise ProxyError(400, "MISSING_UPSTREAM_METHOD", "Upstream-Method header is required")
    method = method.strip().upper()
    if method not in upstream.METHODS:
        raise ProxyError(
            400,
            "INVALID_UPSTREAM_METHOD",
            "Upstream-Method must be one of GET, POST, PUT, PATCH, DELETE",
        )
    target = allowlist.parse(url.strip())
    if target is None:
        raise ProxyError(403, "UPSTREAM_NOT_ALLOWED", "Upstream-URL is not a valid http(s) URL")
    if not allowlist.is_allowed(target, list(ds_settings.PROXY_ALLOWED_UPSTREAMS or [])):
        raise ProxyError(403, "UPSTREAM_NOT_ALLOWED", "Upstream-URL is not in the allowlist")
    from .. import ssrf

    try:
        ssrf.check_host(target.host, allow_localhost=allowlist.allow_localhost())
    except ssrf.UnsafeURL as exc:
        raise ProxyError(403, "UPSTREAM_NOT_ALLOWED", str(exc)) from None
    body = _read_body(request)

    response = await upstream.send(method, url.strip(), upstream.upstream_headers(request), body)
    if 300 <= response.status < 400:
        await response.aclose()
        raise ProxyError(400, "REDIRECT_NOT_ALLOWED", "Proxy cannot follow redirects")
    if not 200 <= response.status < 300:
        error_body = await upstream.read_limited(response, int(ds_settings.PROXY_MAX_ERROR_BODY))
        answer = HttpResponse(
            error_body,
            status=502,
            content_type=upstream.header(response, "Content-Type") or "text/plain",
        )
        answer["Upstream-Status"] = str(response.status)
        answer["Cache-Control"] = "no-store"
        return answer

    upstream_type = upstream.header(response, "Content-Type") or "application/octet-stream"
    stream_id = uuid.uuid4().hex
    try:
        writer = await pipe.create(stream_id, upstream_type)
    except Exception as exc:
        await response.aclose()
        logger.exception("proxy: could not create stream %s", stream_id)
        raise ProxyError(502, "STORAGE_ERROR", "failed to create the stream") from exc
    pipe.start(stream_id, writer, response)

    answer = HttpResponse(status=201)
    del answer["Content-Type"]
    location = f"{request.path.rstrip('/')}/{stream_id}?{signing.sign(stream_id)}"
    answer["Location"] = request.build_absolute_uri(location)
    answer["Upstream-Content-Type"] = upstream_type
    answer["Cache-Control"] = "no-store"
    return answer


def _read_body(request: HttpRequest) -> bytes:
    limit = int(ds_settings.PROXY_MAX_REQUEST_BODY)
    declared = request.META.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProxyError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise ProxyError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
    return body


_STREAM_METHODS = "GET, HEAD, PATCH, DELETE, OPTIONS"


@csrf_exempt
async def stream_view(request: HttpRequest, stream_id: str) -> HttpResponse:
    """``{proxy-url}/{stream-id}``: read, metadata, abort, delete (spec 4.2-4.5)."""
    handler = _HANDLERS.get(request.method or "")
    if request.method == "OPTIONS":
        return _finish(request, _options(_STREAM_METHODS))
    if handler is None:
        return _finish(request, _not_allowed(_STREAM_METHODS))
    try:
        response = await handler(request, stream_id)
    except ProxyError as exc:
        response = exc.response()
    return _finish(request, response)


def _not_found() -> ProxyError:
    return ProxyError(404, "STREAM_NOT_FOUND", "stream does not exist")


async def _delegate(request: HttpRequest, stream_id: str) -> HttpResponse:
    """Serve the request as the stream URL would, plus the proxy's headers."""
    if not _STREAM_ID.fullmatch(stream_id):
        raise _not_found()
    try:
        response = await stream_views.read(request, pipe.data_path(stream_id))
    except NotFound:
        raise _not_found() from None
    except StreamError as exc:
        if exc.status in (404, 410):
            raise _not_found() from None
        return stream_views.error_response(request, exc)
    info = await pipe.info(stream_id)
    if "upstreamContentType" in info:
        response["Upstream-Content-Type"] = info["upstreamContentType"]
    if "outcome" in info:
        response["Proxy-Outcome"] = info["outcome"]
    return response


async def _get(request: HttpRequest, stream_id: str) -> HttpResponse:
    # A capability URL, or service authentication as the fallback (spec 9.2).
    if signing.has_signature(request):
        signing.verify_signature(request, stream_id)
    else:
        signing.verify_service(request)
    return await _delegate(request, stream_id)


async def _head(request: HttpRequest, stream_id: str) -> HttpResponse:
    signing.verify_service(request)  # never a capability URL (spec 4.4)
    return await _delegate(request, stream_id)


async def _patch(request: HttpRequest, stream_id: str) -> HttpResponse:
    signing.verify_signature(request, stream_id)  # never service auth (spec 4.3)
    if request.GET.get("action") != "abort":
        raise ProxyError(400, "INVALID_ACTION", 'query parameter action must be "abort"')
    # Answer once what was received is stored, so a read right after sees it;
    # the pipe may run in another server process (request_abort reaches it).
    await pipe.request_abort(stream_id)
    response = HttpResponse(status=204)
    del response["Content-Type"]
    return response


async def _delete(request: HttpRequest, stream_id: str) -> HttpResponse:
    signing.verify_service(request)
    if _STREAM_ID.fullmatch(stream_id):
        pipe.abort(stream_id)
        await pipe.wait(stream_id)
        for path in (pipe.data_path(stream_id), pipe.meta_path(stream_id)):
            try:
                await _adelete(path)
            except StreamError:
                pass  # idempotent: deleting what does not exist is 204
        pipe.forget(stream_id)
    response = HttpResponse(status=204)
    del response["Content-Type"]
    return response


async def _adelete(path: str) -> None:
    from .. import api

    await api.adelete(path)


_HANDLERS = {"GET": _get, "HEAD": _head, "PATCH": _patch, "DELETE": _delete}
