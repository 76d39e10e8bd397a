"""Sessions, their members, their agents and who is present.

``SessionAgent`` and ``Presence`` are registered with ``durable_streams.state``:
saving one appends its ``agent`` / ``presence`` event to the session's stream
in the same transaction. Messages are not rows: they live only in the stream
(:mod:`.schema`), which is the session's durable record.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from durable_streams import state

from .schema import AGENT, PRESENCE, stream_path


class ChatSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=120)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="chat_sessions"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def stream_path(self) -> str:
        return stream_path(self.id)

    def has_member(self, user) -> bool:
        return bool(user.is_authenticated) and self.memberships.filter(user=user).exists()


class Membership(models.Model):
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], name="one_membership_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.session}"


@state.register(
    stream=lambda agent: stream_path(agent.session_id),
    type=AGENT,
    key="agent_id",
    to_value=lambda agent: {
        "agentId": agent.agent_id,
        "agentName": agent.agent_name,
        "triggers": agent.triggers,
        "endpoint": agent.endpoint,
    },
)
class SessionAgent(models.Model):
    """An agent registered in a session (``agentId`` is unique per session)."""

    TRIGGERS = [("all", "every message"), ("user-messages", "user messages")]

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="agents")
    agent_id = models.CharField(max_length=64)
    agent_name = models.CharField(max_length=100)
    triggers = models.CharField(max_length=20, choices=TRIGGERS)
    # What runs it: "offline" or "openai:<model>" (see agents.py).
    endpoint = models.CharField(max_length=200)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "agent_id"], name="one_agent_id_per_session")
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} in {self.session_id}"


@state.register(
    stream=lambda p: stream_path(p.session_id),
    type=PRESENCE,
    key=lambda p: f"{p.actor_id}:{p.device_id}",
    to_value=lambda p: {
        "actorId": p.actor_id,
        "actorType": p.actor_type,
        "userName": p.user_name,
        "deviceId": p.device_id,
        "status": p.status,
    },
)
class Presence(models.Model):
    """One actor (a user's tab or an agent) in a session.

    ``last_seen`` is not part of the event: heartbeats update it with events
    paused (:mod:`.presence`), so only status changes reach the stream.
    """

    ONLINE, OFFLINE = "online", "offline"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="presence")
    actor_id = models.CharField(max_length=64)
    actor_type = models.CharField(max_length=10, default="user")
    user_name = models.CharField(max_length=150)
    device_id = models.CharField(max_length=64)
    status = models.CharField(max_length=10, default=ONLINE)
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "actor_id", "device_id"], name="one_presence_per_device"
            )
        ]
        indexes = [models.Index(fields=["status", "last_seen"])]

    def __str__(self) -> str:
        return f"{self.user_name}/{self.device_id}: {self.status}"
