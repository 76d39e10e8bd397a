"""The session stream's schema: what each State Protocol event type carries.

One stream per session, ``sessions/<uuid>``, multiplexes (the post's schema,
docs/sessions.md):

========  ======================  ===============================================
type      key                     value
========  ======================  ===============================================
chunk     ``messageId:seq``       messageId, actorId, actorName, role, chunk, seq,
                                  createdAt; ``chunk`` is a JSON string (below)
presence  ``actorId:deviceId``    actorId, actorType, userName, deviceId, status
agent     ``agentId``             agentId, agentName, triggers, endpoint
========  ======================  ===============================================

A message is the chunks of one ``messageId`` in ``seq`` order. ``chunk``
payloads: a user's whole message ``{"type": "message", "text"}`` (seq 0, the
only chunk); an agent's reply ``{"type": "start", "replyTo", "replyToRole"}``,
then ``{"type": "delta", "text"}`` per token, then ``{"type": "finish"}`` or
``{"type": "error", "error"}``. Chunk events are written directly (user
messages by the view, replies by the token writer); presence and agent events
come from the :mod:`.models` registered with ``durable_streams.state``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from durable_streams.state import current_txid, events

CHUNK = "chunk"
PRESENCE = "presence"
AGENT = "agent"

ROLE_USER = "user"
ROLE_ASSISTANT = "assistant"

STREAM_PREFIX = "sessions/"


def stream_path(session_id: uuid.UUID | str) -> str:
    """The stream of one session."""
    return f"{STREAM_PREFIX}{session_id}"


def session_id_of(path: str) -> uuid.UUID | None:
    """The session a stream path belongs to, or None for any other path."""
    if not path.startswith(STREAM_PREFIX):
        return None
    try:
        return uuid.UUID(path[len(STREAM_PREFIX) :])
    except ValueError:
        return None


def new_message_id() -> str:
    return f"msg-{uuid.uuid4().hex}"


def chunk_event(
    *,
    message_id: str,
    seq: int,
    actor_id: str,
    actor_name: str,
    role: str,
    payload: dict[str, Any],
) -> dict:
    """An insert of one chunk row, stamped with the current txid (if any)."""
    stamped = {"timestamp": events.timestamp()}
    if (txid := current_txid()) is not None:
        stamped["txid"] = txid
    value = {
        "messageId": message_id,
        "actorId": actor_id,
        "actorName": actor_name,
        "role": role,
        "chunk": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
        "seq": seq,
        "createdAt": stamped["timestamp"],
    }
    return events.insert(CHUNK, f"{message_id}:{seq}", value, **stamped)


def payload_of(event: Any) -> tuple[dict, dict] | None:
    """``(value, chunk payload)`` of a chunk insert event; None for anything else."""
    if not isinstance(event, dict) or event.get("type") != CHUNK:
        return None
    if (event.get("headers") or {}).get("operation") != "insert":
        return None
    value = event.get("value")
    if not isinstance(value, dict):
        return None
    try:
        payload = json.loads(value.get("chunk") or "")
    except ValueError:
        return None
    return (value, payload) if isinstance(payload, dict) else None
