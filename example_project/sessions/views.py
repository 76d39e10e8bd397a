"""Pages and write endpoints of the sessions app.

Reads go straight to the session's stream (the browser's StreamDB, checked by
:class:`.policy.SessionsPolicy`); writes come here, where membership is
checked and the author is stamped, and are appended to the stream. Clients
send ``X-Txid`` (``durable_streams.state.TxidMiddleware``) and await that txid
in their StreamDB to know their write is in the stream.
"""

from __future__ import annotations

import json
import re

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from durable_streams import api, state

from . import presence
from .agents import catalogue
from .models import ChatSession, Membership, Presence, SessionAgent
from .schema import ROLE_USER, chunk_event, new_message_id

MAX_MESSAGE_CHARS = 4000
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def actor_id(user) -> str:
    return f"user-{user.pk}"


def display_name(user) -> str:
    return user.get_full_name() or user.get_username()


def _member_session(request: HttpRequest, session_id) -> ChatSession:
    """The session if the user is a member; 404 if unknown, 403 if not a member."""
    session = get_object_or_404(ChatSession, pk=session_id)
    if not session.has_member(request.user):
        raise PermissionDenied("you are not a member of this session")
    return session


def _error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def register_agent(session: ChatSession, agent_id: str) -> SessionAgent | None:
    """Register a catalogue agent in ``session`` (its ``agent`` event goes to the
    stream); None if there is no such agent. Registering twice is a no-op."""
    spec = catalogue().get(agent_id)
    if spec is None:
        return None
    agent, _ = SessionAgent.objects.get_or_create(
        session=session,
        agent_id=spec.agent_id,
        defaults={"agent_name": spec.name, "triggers": spec.triggers, "endpoint": spec.endpoint},
    )
    return agent


@login_required
def session_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        title = request.POST.get("title", "").strip()[:120]
        if not title:
            messages.error(request, "A session needs a title.")
            return redirect("sessions:list")
        with transaction.atomic():
            session = ChatSession.objects.create(title=title, created_by=request.user)
            Membership.objects.create(session=session, user=request.user)
            # The stream exists from the start, so members can open it before
            # anything is said; agent events follow in the same transaction.
            api.create_stream(session.stream_path, content_type="application/json")
            for agent_id in request.POST.getlist("agents"):
                register_agent(session, agent_id)
        return redirect("sessions:detail", session_id=session.pk)
    sessions = request.user.chat_sessions.all()
    return render(
        request,
        "sessions/list.html",
        {"sessions": sessions, "catalogue": catalogue().values()},
    )


@login_required
def session_detail(request: HttpRequest, session_id) -> HttpResponse:
    session = _member_session(request, session_id)
    config = {
        "sessionId": str(session.pk),
        "streamUrl": request.build_absolute_uri(f"/v1/stream/{session.stream_path}"),
        "messagesUrl": reverse("sessions:messages", args=[session.pk]),
        "presenceUrl": reverse("sessions:presence", args=[session.pk]),
        "actorId": actor_id(request.user),
        "userName": display_name(request.user),
        "heartbeatSeconds": presence.HEARTBEAT_SECONDS,
    }
    registered = set(session.agents.values_list("agent_id", flat=True))
    return render(
        request,
        "sessions/detail.html",
        {
            "session": session,
            "config": config,
            "members": session.members.order_by("username"),
            "addable_agents": [a for a in catalogue().values() if a.agent_id not in registered],
            "offline_after": presence.OFFLINE_AFTER_SECONDS + presence.SWEEP_SECONDS,
        },
    )


@login_required
@require_POST
def invite(request: HttpRequest, session_id) -> HttpResponse:
    session = _member_session(request, session_id)
    username = request.POST.get("username", "").strip()
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        messages.error(request, f"No user called {username!r}.")
    else:
        try:
            with transaction.atomic():
                Membership.objects.create(session=session, user=user)
            messages.success(request, f"{username} is now a member.")
        except IntegrityError:
            messages.info(request, f"{username} is a member already.")
    return redirect("sessions:detail", session_id=session.pk)


@login_required
@require_POST
def add_agent(request: HttpRequest, session_id) -> HttpResponse:
    session = _member_session(request, session_id)
    if register_agent(session, request.POST.get("agent", "")) is None:
        messages.error(request, "Unknown agent.")
    return redirect("sessions:detail", session_id=session.pk)


@require_POST
def post_message(request: HttpRequest, session_id) -> JsonResponse:
    """Append a user's message (one ``chunk`` row) to the session's stream."""
    if not request.user.is_authenticated:
        return _error("sign in first", 401)
    session = get_object_or_404(ChatSession, pk=session_id)
    if not session.has_member(request.user):
        return _error("you are not a member of this session", 403)
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return _error("the body must be JSON")
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return _error("'text' must be a non-empty string")
    if len(text) > MAX_MESSAGE_CHARS:
        return _error(f"'text' is longer than {MAX_MESSAGE_CHARS} characters")
    message_id = new_message_id()
    event = chunk_event(
        message_id=message_id,
        seq=0,
        actor_id=actor_id(request.user),
        actor_name=display_name(request.user),
        role=ROLE_USER,
        payload={"type": "message", "text": text.strip()},
    )
    state.append_events(session.stream_path, [event])
    return JsonResponse({"messageId": message_id, "txid": state.current_txid()}, status=201)


@require_POST
def update_presence(request: HttpRequest, session_id) -> JsonResponse:
    """``join``/``beat`` (online) or ``leave`` (offline) for one device (form data,
    so that ``navigator.sendBeacon`` can send it when the tab closes)."""
    if not request.user.is_authenticated:
        return _error("sign in first", 401)
    session = get_object_or_404(ChatSession, pk=session_id)
    if not session.has_member(request.user):
        return _error("you are not a member of this session", 403)
    device_id = request.POST.get("deviceId", "")
    action = request.POST.get("action", "")
    if not DEVICE_ID.fullmatch(device_id):
        return _error("'deviceId' must be 1-64 letters, digits, '-' or '_'")
    if action not in ("join", "beat", "leave"):
        return _error("'action' must be join, beat or leave")
    status = Presence.OFFLINE if action == "leave" else Presence.ONLINE
    presence.set_status(
        session,
        actor_id=actor_id(request.user),
        device_id=device_id,
        user_name=display_name(request.user),
        status=status,
    )
    return JsonResponse({"status": status, "heartbeatSeconds": presence.HEARTBEAT_SECONDS})
