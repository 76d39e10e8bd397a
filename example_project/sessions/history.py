"""A session's messages as agents see them: the stream's chunks, grouped.

The same materialization the browser does (chunks of one ``messageId`` in
``seq`` order), in Python, for the agent runner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from durable_streams import api

from .agents import HistoryMessage
from .schema import payload_of


@dataclass
class MessageState:
    """One message while its chunks arrive."""

    message_id: str
    actor_id: str
    actor_name: str
    role: str
    created_at: str
    parts: dict[int, dict] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return any(p.get("type") in ("message", "finish", "error") for p in self.parts.values())

    @property
    def finished_ok(self) -> bool:
        return any(p.get("type") in ("message", "finish") for p in self.parts.values())

    @property
    def text(self) -> str:
        out = []
        for seq in sorted(self.parts):
            part = self.parts[seq]
            if part.get("type") in ("message", "delta"):
                out.append(str(part.get("text", "")))
        return "".join(out)

    @property
    def reply_to_role(self) -> str | None:
        """For an agent's reply: the role of the message it answered."""
        for part in self.parts.values():
            if part.get("type") == "start":
                return part.get("replyToRole")
        return None

    def as_history(self) -> HistoryMessage:
        return HistoryMessage(self.message_id, self.actor_id, self.actor_name, self.role, self.text)


class SessionHistory:
    """Every message of a session in order of its first chunk."""

    def __init__(self) -> None:
        self.messages: dict[str, MessageState] = {}

    def apply(self, events: Iterable[Any]) -> list[MessageState]:
        """Add the chunk events among ``events``; returns the messages they completed."""
        completed = []
        for event in events:
            parsed = payload_of(event)
            if parsed is None:
                continue
            value, payload = parsed
            message = self.messages.get(value["messageId"])
            if message is None:
                message = self.messages[value["messageId"]] = MessageState(
                    value["messageId"],
                    value.get("actorId", ""),
                    value.get("actorName", ""),
                    value.get("role", ""),
                    value.get("createdAt", ""),
                )
            was_complete = message.complete
            message.parts[int(value.get("seq", 0))] = payload
            if message.complete and not was_complete:
                completed.append(message)
        return completed

    def complete_messages(self) -> list[HistoryMessage]:
        done = [m for m in self.messages.values() if m.finished_ok]
        return [m.as_history() for m in sorted(done, key=lambda m: m.created_at)]

    @classmethod
    def read(cls, path: str) -> SessionHistory:
        """The history of the session stream at ``path`` as of now."""
        history = cls()
        events, _ = api.read_json(path)
        history.apply(events)
        return history
