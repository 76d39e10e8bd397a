"""Server half of the Vercel AI SDK transport (``@durable-streams/aisdk-transport``).

The client, ``createDurableChatTransport({ api })``, POSTs the chat to ``api``
and reads the reply from the URL the answer points to; ``useChat({ resume:
true })`` asks ``{api}/{chatId}/stream`` on page load whether a generation is
still running. This module answers both, like the TypeScript
``toDurableStreamResponse``:

- one ``application/json`` stream per generation, one UI message chunk per
  message, closed when the generation ends (that closure is what ends the
  reply in ``useChat``);
- :func:`durable_stream_response` in ``"immediate"`` mode answers 201 with
  ``Location`` and ``{"streamUrl"}`` once the stream exists, the model writing
  on in the background; ``"await"`` answers 200 with ``finalOffset`` after the
  stream was closed;
- :func:`reconnect_response` answers 204 when nothing runs, else 200 with
  ``Location`` and ``{"streamUrl"}``;
- :func:`ui_message_chunks` turns text deltas into the AI SDK chunk sequence.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, reverse

from .background import call_hook, run_detached, spawn
from .encoding import JSONMessages, describe_failure
from .writer import TokenWriter, WriteResult

__all__ = [
    "active_stream",
    "durable_stream_response",
    "error_chunk",
    "reconnect_response",
    "stream_url",
    "ui_message_chunks",
]

Mode = Literal["immediate", "await"]


def error_chunk(error: BaseException) -> dict[str, str]:
    """The AI SDK ``error`` chunk written when a generation fails."""
    return {"type": "error", "errorText": describe_failure(error)}


def stream_url(request: HttpRequest, stream_path: str) -> str:
    """The absolute URL of ``stream_path`` under ``durable_streams.urls``."""
    try:
        url = reverse("durable_streams:stream", kwargs={"stream_path": stream_path})
    except NoReverseMatch:
        raise ValueError(
            "durable_streams.urls is not mounted: pass read_url to durable_stream_response"
        ) from None
    return request.build_absolute_uri(url)


def _pointer(read_url: str, status: int, **extra: Any) -> HttpResponse:
    response = JsonResponse({"streamUrl": read_url, **extra}, status=status)
    response["Location"] = read_url
    response["Cache-Control"] = "no-store"
    # A browser on another origin may read Location only if it is exposed.
    response["Access-Control-Expose-Headers"] = "Location"
    return response


async def durable_stream_response(
    request: HttpRequest,
    source: AsyncIterable[Any] | Iterable[Any],
    *,
    stream_path: str,
    read_url: str | None = None,
    mode: Mode = "immediate",
    on_finish: Callable[[WriteResult], Any] | None = None,
    **writer_options: Any,
) -> HttpResponse:
    """Write ``source`` (AI SDK UI message chunks) into a new stream and point to it.

    ``stream_path`` names the generation's stream (e.g. ``chat/<id>/<uuid>``);
    ``read_url`` is what the client reads (default: the stream's own URL under
    ``durable_streams.urls``; an app route serving :func:`~.reads.serve_read`
    keeps reads behind the app's own authentication). ``on_finish(result)``
    (sync or async) runs when the generation ended, however it ended. Further
    options go to :class:`~.writer.TokenWriter` (``linger``, ``batch_size``...).
    A failing ``source`` leaves an ``error`` chunk and a closed stream.
    """
    if mode not in ("immediate", "await"):
        raise ValueError("mode must be 'immediate' or 'await'")
    writer_options.setdefault("encoding", JSONMessages(error_marker=error_chunk))
    writer = TokenWriter(stream_path, **writer_options)
    await writer.open()  # the stream exists before the client hears of it
    url = read_url or stream_url(request, stream_path)

    async def generate() -> WriteResult:
        try:
            return await writer.consume(source)
        finally:
            if writer.result is not None:
                await call_hook(on_finish, writer.result)

    if mode == "immediate":
        spawn(generate())
        return _pointer(url, 201)
    # Detached: a client that disconnects must not cancel the generation.
    result = await run_detached(generate())
    return _pointer(url, 200, finalOffset=result.next_offset)


def reconnect_response(read_url: str | None) -> HttpResponse:
    """The answer of ``GET {api}/{chatId}/stream``: 204 when no generation
    runs (never a 404: every fresh chat page asks), else 200 pointing to it.

    Point only to a generation that is still running: the client replays the
    stream from its start, so a finished one would repeat a reply the page
    already shows.
    """
    if read_url is None:
        response = HttpResponse(status=204)
        del response["Content-Type"]
        response["Cache-Control"] = "no-store"
        return response
    return _pointer(read_url, 200)


def _latest_open(prefix: str) -> str | None:
    from ..models import Stream

    return (
        Stream.objects.filter(path__startswith=prefix, closed=False, deleted_at__isnull=True)
        .order_by("-created_at", "-id")
        .values_list("path", flat=True)
        .first()
    )


async def active_stream(prefix: str) -> str | None:
    """The newest stream under ``prefix`` that is still open (its generation
    still running), or None.

    For apps that name generation streams ``<prefix><uuid>`` and keep no
    ``activeStreamId`` of their own.
    """
    from ..executor import run

    return await run(_latest_open, prefix)


async def ui_message_chunks(
    text_deltas: AsyncIterable[str], *, message_id: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Wrap a model's text deltas in the AI SDK UI message chunk sequence:
    ``start``, ``start-step``, ``text-start``, one ``text-delta`` per delta,
    ``text-end``, ``finish-step``, ``finish``."""
    start: dict[str, Any] = {"type": "start"}
    if message_id is not None:
        start["messageId"] = message_id
    yield start
    yield {"type": "start-step"}
    yield {"type": "text-start", "id": "text-0"}
    async for delta in text_deltas:
        if delta:
            yield {"type": "text-delta", "id": "text-0", "delta": delta}
    yield {"type": "text-end", "id": "text-0"}
    yield {"type": "finish-step"}
    yield {"type": "finish", "finishReason": "stop"}
