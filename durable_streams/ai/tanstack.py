"""Server half of the TanStack AI transport (``@durable-streams/tanstack-ai-transport``).

The client, ``durableStreamConnection({ sendUrl, readUrl })``, POSTs the chat
to ``sendUrl`` (the chat id is in that URL, not in the body) and keeps one
live read of the chat's *session stream* open at ``readUrl``. Like the
TypeScript ``toDurableChatSessionResponse``, :func:`chat_session_response`:

- ensures the session stream (``application/json``, never closed: every turn
  appends to it);
- appends the new user message(s) as ``TEXT_MESSAGE_START/CONTENT/END`` echo
  chunks *before* answering, keeping the client's message ids;
- appends the model's chunks, sanitised (a ``TEXT_MESSAGE_CONTENT`` loses its
  accumulated ``content``); a reply must be framed by ``RUN_STARTED`` and
  ``RUN_FINISHED`` (:func:`agui_chunks` does that for plain text deltas);
- answers 202 (``"immediate"``) or, after the model finished, 200 (``"await"``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse

from .background import call_hook, run_detached, spawn
from .encoding import JSONMessages, describe_failure
from .writer import TokenWriter, WriteResult

__all__ = [
    "agui_chunks",
    "chat_session_response",
    "echo_chunks",
    "latest_user_message",
    "run_error_chunk",
    "sanitize_chunk",
]

Mode = Literal["immediate", "await"]
_ROLES = ("assistant", "system", "tool")


def _now_ms() -> int:
    return int(time.time() * 1000)


def sanitize_chunk(chunk: Any) -> Any:
    """A ``TEXT_MESSAGE_CONTENT`` without its accumulated ``content`` (the
    ``delta`` suffices); every other chunk as is."""
    if isinstance(chunk, Mapping) and chunk.get("type") == "TEXT_MESSAGE_CONTENT":
        if "content" in chunk:
            return {key: value for key, value in chunk.items() if key != "content"}
    return chunk


def message_text(message: Mapping[str, Any]) -> str:
    parts = message.get("parts")
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        if isinstance(part, Mapping) and part.get("type") == "text":
            value = part.get("content")
            if not isinstance(value, str):
                value = part.get("text")
            texts.append(value if isinstance(value, str) else "")
    return "".join(texts)


def echo_chunks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chunks that put a client's message into the session stream."""
    message_id = message.get("id")
    if not isinstance(message_id, str) or not message_id:
        message_id = str(uuid.uuid4())
    role = message.get("role") if message.get("role") in _ROLES else "user"
    text = message_text(message)
    common = {"messageId": message_id, "model": "client", "timestamp": _now_ms()}
    chunks: list[dict[str, Any]] = [{"type": "TEXT_MESSAGE_START", "role": role, **common}]
    if text:
        chunks.append({"type": "TEXT_MESSAGE_CONTENT", "delta": text, **common})
    chunks.append({"type": "TEXT_MESSAGE_END", **common})
    return chunks


def latest_user_message(messages: Any) -> dict[str, Any] | None:
    """The last ``user`` message of a request's ``messages`` list, if any."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def run_error_chunk(error: BaseException) -> dict[str, Any]:
    """The chunk written when a reply fails: TanStack's ``RUN_ERROR``, which
    ends the client's "generating" state as ``RUN_FINISHED`` would."""
    text = describe_failure(error)
    return {
        "type": "RUN_ERROR",
        "message": text,
        "error": {"message": text},
        "timestamp": _now_ms(),
    }


def _sanitized(chunk: Any) -> list[Any]:
    return [sanitize_chunk(chunk)]


async def chat_session_response(
    request: HttpRequest,
    *,
    stream_path: str,
    new_messages: Iterable[Mapping[str, Any]],
    response_stream: AsyncIterable[Any] | Iterable[Any],
    mode: Mode = "immediate",
    on_finish: Callable[[WriteResult], Any] | None = None,
    **writer_options: Any,
) -> HttpResponse:
    """Append ``new_messages`` and the model's ``response_stream`` to the
    chat's session stream at ``stream_path``; answer 202 (or 200 in
    ``"await"`` mode) with an empty body.

    A failing ``response_stream`` leaves a ``RUN_ERROR`` chunk; the session
    stream stays open for the next turn. Further options go to
    :class:`~.writer.TokenWriter`.
    """
    if mode not in ("immediate", "await"):
        raise ValueError("mode must be 'immediate' or 'await'")
    writer_options.setdefault("encoding", JSONMessages(_sanitized, error_marker=run_error_chunk))
    writer = TokenWriter(stream_path, close=False, **writer_options)
    await writer.open()
    for message in new_messages:
        for chunk in echo_chunks(message):
            await writer.write(chunk)
    await writer.flush()  # the echo is stored before the client hears back

    async def generate() -> WriteResult:
        try:
            return await writer.consume(response_stream)
        finally:
            if writer.result is not None:
                await call_hook(on_finish, writer.result)

    if mode == "immediate":
        spawn(generate())
        status = 202
    else:
        await run_detached(generate())
        status = 200
    response = HttpResponse(status=status)
    del response["Content-Type"]
    response["Cache-Control"] = "no-store"
    return response


async def agui_chunks(
    text_deltas: AsyncIterable[str],
    *,
    model: str = "model",
    thread_id: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Wrap a model's text deltas in one TanStack AI (AG-UI) run: ``RUN_STARTED``,
    ``TEXT_MESSAGE_START``, one ``TEXT_MESSAGE_CONTENT`` per delta,
    ``TEXT_MESSAGE_END``, ``RUN_FINISHED``."""
    run_id = f"run_{uuid.uuid4().hex}"
    message_id = f"msg_{uuid.uuid4().hex}"
    thread = thread_id or f"thread-{uuid.uuid4().hex}"
    meta = {"tanstack": {"model": model}}
    yield {
        "type": "RUN_STARTED",
        "runId": run_id,
        "threadId": thread,
        "timestamp": _now_ms(),
        "metadata": meta,
    }
    yield {
        "type": "TEXT_MESSAGE_START",
        "messageId": message_id,
        "role": "assistant",
        "timestamp": _now_ms(),
        "metadata": meta,
    }
    async for delta in text_deltas:
        if delta:
            yield {
                "type": "TEXT_MESSAGE_CONTENT",
                "messageId": message_id,
                "delta": delta,
                "timestamp": _now_ms(),
            }
    yield {
        "type": "TEXT_MESSAGE_END",
        "messageId": message_id,
        "timestamp": _now_ms(),
        "metadata": meta,
    }
    yield {
        "type": "RUN_FINISHED",
        "runId": run_id,
        "threadId": thread,
        "timestamp": _now_ms(),
        "metadata": {"tanstack": {"model": model, "finishReason": "stop"}},
    }
