"""Example AI chat endpoints for the two official durable transports.

AI SDK (``createDurableChatTransport({ api: "/api/aisdk/chat" })``):

- ``POST /api/aisdk/chat``: starts a generation into ``chat/aisdk/<id>/<uuid>``;
- ``GET  /api/aisdk/chat/<id>/stream``: the reconnect endpoint (204 or 200);
- ``GET  /api/aisdk/chat-stream?path=...``: the read route handed to the client.

TanStack AI (``durableStreamConnection({ sendUrl: "/api/tanstack/chat?id=<id>",
readUrl: "/api/tanstack/chat-stream?id=<id>" })``):

- ``POST /api/tanstack/chat?id=<id>``: appends a turn to ``chat/tanstack/<id>``;
- ``GET  /api/tanstack/chat-stream?id=<id>``: the read route of that session.

The model is the local fake (:mod:`example_project.fake_model`), which speaks
the OpenAI streaming shape; docs/ai-streaming.md shows the OpenAI client in its
place. These views accept anyone, as the example's streams do: a real app
checks ``request.user`` and chat ownership in each of them.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from durable_streams import api
from durable_streams.ai import aisdk, tanstack
from durable_streams.ai.reads import serve_read
from durable_streams.ai.sources import openai_text_deltas

from .fake_model import stream_reply

CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
AISDK_PREFIX = "chat/aisdk/"
TANSTACK_PREFIX = "chat/tanstack/"


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _json_body(request: HttpRequest) -> dict | None:
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _prompt(messages: list, key: str) -> str | None:
    """The text of the last user message (AI SDK parts carry ``text``,
    TanStack parts ``content``)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            parts = message.get("parts") or []
            return "".join(
                str(part.get(key, "")) for part in parts if isinstance(part, dict)
            ).strip()
    return None


# --- AI SDK ------------------------------------------------------------------------------


@csrf_exempt
@require_POST
async def aisdk_chat(request: HttpRequest) -> HttpResponse:
    body = _json_body(request)
    if body is None:
        return _bad("the body must be a JSON object")
    chat_id, messages = body.get("id"), body.get("messages")
    if not isinstance(chat_id, str) or not CHAT_ID.fullmatch(chat_id):
        return _bad("id must be 1-64 letters, digits, '-' or '_'")
    if not isinstance(messages, list) or (prompt := _prompt(messages, "text")) is None:
        return _bad("messages must hold a user message")
    stream_path = f"{AISDK_PREFIX}{chat_id}/{uuid.uuid4().hex}"
    read_url = request.build_absolute_uri(
        reverse("ai-aisdk-chat-stream") + "?path=" + quote(stream_path, safe="/")
    )
    model = stream_reply(prompt)  # e.g. await openai.chat.completions.create(..., stream=True)
    return await aisdk.durable_stream_response(
        request,
        aisdk.ui_message_chunks(openai_text_deltas(model)),
        stream_path=stream_path,
        read_url=read_url,
        mode="await" if request.GET.get("mode") == "await" else "immediate",
    )


@require_GET
async def aisdk_reconnect(request: HttpRequest, chat_id: str) -> HttpResponse:
    if not CHAT_ID.fullmatch(chat_id):
        return aisdk.reconnect_response(None)
    active = await aisdk.active_stream(f"{AISDK_PREFIX}{chat_id}/")
    if active is None:
        return aisdk.reconnect_response(None)
    url = reverse("ai-aisdk-chat-stream") + "?path=" + quote(active, safe="/")
    return aisdk.reconnect_response(request.build_absolute_uri(url))


async def aisdk_chat_stream(request: HttpRequest) -> HttpResponse:
    path = request.GET.get("path", "")
    if not path.startswith(AISDK_PREFIX):
        return _bad("unknown stream", status=404)
    return await serve_read(request, path)


# --- TanStack AI ---------------------------------------------------------------------------


def _session_id(request: HttpRequest) -> str | None:
    chat_id = request.GET.get("id", "")
    return chat_id if CHAT_ID.fullmatch(chat_id) else None


@csrf_exempt
@require_POST
async def tanstack_chat(request: HttpRequest) -> HttpResponse:
    chat_id = _session_id(request)
    if chat_id is None:
        return _bad("id must be 1-64 letters, digits, '-' or '_'")
    body = _json_body(request)
    if body is None or not isinstance(body.get("messages"), list):
        return _bad("the body must be a JSON object with messages")
    latest = tanstack.latest_user_message(body["messages"])
    prompt = _prompt(body["messages"], "content")
    if latest is None or prompt is None:
        return _bad("messages must hold a user message")
    model = stream_reply(prompt)
    return await tanstack.chat_session_response(
        request,
        stream_path=f"{TANSTACK_PREFIX}{chat_id}",
        new_messages=[latest],
        response_stream=tanstack.agui_chunks(openai_text_deltas(model), model="fake-model"),
        mode="await" if request.GET.get("mode") == "await" else "immediate",
    )


async def tanstack_chat_stream(request: HttpRequest) -> HttpResponse:
    chat_id = _session_id(request)
    if chat_id is None:
        return _bad("id must be 1-64 letters, digits, '-' or '_'")
    path = f"{TANSTACK_PREFIX}{chat_id}"
    # The session exists from the chat's first read: the client's live read
    # may start before its first message.
    await api.acreate_stream(path, content_type="application/json")
    return await serve_read(request, path)
