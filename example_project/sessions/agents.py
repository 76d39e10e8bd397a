"""The agents a session can register, and how each one produces a reply.

An agent is a name, a trigger (``all``: every message but its own;
``user-messages``: only users' messages) and a ``reply(history, message)``
async iterator of text deltas. The runner (:mod:`.runner`) streams those
deltas into the session with the token writer; the agent itself knows nothing
about streams. To add one, write a reply function and add an :class:`AgentSpec`
to :func:`catalogue` (docs/sessions.md walks through it).

- ``scribe`` (offline): no network; a deterministic reply at a realistic pace
  (``SESSIONS_OFFLINE_TOKEN_SECONDS`` per token, default 0.05 s).
- ``tally`` (offline, trigger ``all``): a one-line count after every message,
  agents' answers to users included (never its own, never an answer to an agent).
- ``openai``: any OpenAI-compatible chat completions endpoint, enabled by
  ``OPENAI_API_KEY`` (and optionally ``OPENAI_BASE_URL``, ``OPENAI_MODEL``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

ALL = "all"
USER_MESSAGES = "user-messages"


@dataclass(frozen=True)
class HistoryMessage:
    """A complete message of the session, as agents see it."""

    message_id: str
    actor_id: str
    actor_name: str
    role: str
    text: str


Reply = Callable[[list[HistoryMessage], HistoryMessage], AsyncIterator[str]]


@dataclass(frozen=True)
class AgentSpec:
    agent_id: str
    name: str
    triggers: str
    endpoint: str
    reply: Reply

    def wants(self, message: HistoryMessage, in_reply_to_role: str | None) -> bool:
        """Whether this agent answers ``message`` (its trigger, and no loops:
        never its own messages, never an agent's answer to another agent)."""
        if message.actor_id == self.agent_id:
            return False
        if message.role == "user":
            return True
        return self.triggers == ALL and in_reply_to_role == "user"


# --- scribe: offline, deterministic --------------------------------------------------

_WORDS = re.compile(r"\S+\s*")
_PUNCTUATION = ".,;:!?\"'()"


def scribe_text(prompt: str) -> str:
    """Scribe's whole reply to ``prompt``: deterministic, with numbered clauses
    so that a lost or repeated token shows."""
    words = prompt.split() or ["(nothing)"]
    clauses = [
        f"({n}) {word.lower().strip(_PUNCTUATION) or word}"
        for n, word in enumerate(words[:60], start=1)
    ]
    return (
        f"Scribe here. Minutes of {len(words)} words: " + "; ".join(clauses) + ". End of minutes."
    )


def scribe_tokens(prompt: str) -> list[str]:
    """The reply split into the tokens it is streamed as (words with their spaces)."""
    return _WORDS.findall(scribe_text(prompt))


async def scribe_reply(
    history: list[HistoryMessage], message: HistoryMessage
) -> AsyncIterator[str]:
    delay = float(os.environ.get("SESSIONS_OFFLINE_TOKEN_SECONDS", "0.05"))
    for token in scribe_tokens(message.text):
        await asyncio.sleep(delay)
        yield token


# --- tally: offline, answers every message (trigger "all") ---------------------------


async def tally_reply(history: list[HistoryMessage], message: HistoryMessage) -> AsyncIterator[str]:
    delay = float(os.environ.get("SESSIONS_OFFLINE_TOKEN_SECONDS", "0.05"))
    text = (
        f"Tally: message {len(history)} of this session, "
        f"{len(message.text.split())} words from {message.actor_name}."
    )
    for token in _WORDS.findall(text):
        await asyncio.sleep(delay)
        yield token


# --- any OpenAI-compatible endpoint ---------------------------------------------------


def openai_model() -> str:
    return os.environ.get("OPENAI_MODEL", "gpt-4o-mini")


async def openai_reply(
    history: list[HistoryMessage], message: HistoryMessage
) -> AsyncIterator[str]:
    """Stream a chat completion of the session's history (last 40 messages)."""
    from openai import AsyncOpenAI

    from durable_streams.ai.sources import openai_text_deltas

    client = AsyncOpenAI(base_url=os.environ.get("OPENAI_BASE_URL") or None)
    messages = [
        {
            "role": "system",
            "content": "You are an assistant in a group chat. Several people talk to you; "
            "each user message starts with the speaker's name. Be brief.",
        }
    ]
    for item in history[-40:]:
        if item.role == "user":
            messages.append({"role": "user", "content": f"{item.actor_name}: {item.text}"})
        else:
            messages.append({"role": "assistant", "content": item.text})
    completion = await client.chat.completions.create(
        model=openai_model(), messages=messages, stream=True
    )
    async for text in openai_text_deltas(completion):
        yield text


def openai_enabled() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY"))


def catalogue() -> dict[str, AgentSpec]:
    """The agents sessions can register, by id (read per call: env changes apply)."""
    agents = {
        "scribe": AgentSpec("scribe", "Scribe (offline)", USER_MESSAGES, "offline", scribe_reply),
        "tally": AgentSpec("tally", "Tally (offline)", ALL, "offline", tally_reply),
    }
    if openai_enabled():
        agents["openai"] = AgentSpec(
            "openai",
            f"Assistant ({openai_model()})",
            USER_MESSAGES,
            f"openai:{openai_model()}",
            openai_reply,
        )
    return agents
