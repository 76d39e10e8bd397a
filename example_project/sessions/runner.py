"""The agents' reply step: new events of a session in, agents' replies out.

:func:`respond` takes the events a runner just read from a session stream
(:mod:`.wakes` claims them), finds the messages they completed, and lets each
registered agent whose trigger matches reply. Replies are streamed into the
session with :func:`durable_streams.ai.awrite_stream` (coalesced, exactly once
per batch) as ``chunk`` events, one message id per (agent, message) pair: a
wake taken again after a runner died does not write a reply twice, and a reply
cut short that way is ended with an ``error`` chunk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import sync_to_async

from durable_streams.ai import JSONMessages, awrite_stream

from .agents import AgentSpec, catalogue
from .history import MessageState, SessionHistory
from .models import SessionAgent
from .schema import ROLE_ASSISTANT, chunk_event, session_id_of

logger = logging.getLogger("example_project.sessions")


def reply_id(agent_id: str, message_id: str) -> str:
    """The id of ``agent_id``'s reply to ``message_id``: one reply per pair."""
    return f"reply-{agent_id}-{message_id}"


def _failure_text(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "generation cancelled"
    return "generation failed"


async def reply(path: str, spec: AgentSpec, message: MessageState, history: SessionHistory) -> None:
    """Stream ``spec``'s reply to ``message`` into the session at ``path``."""
    rid = reply_id(spec.agent_id, message.message_id)
    existing = history.messages.get(rid)
    if existing is not None:
        if not existing.complete:  # cut short by a runner that died: end it, once
            event = _chunk(
                rid, max(existing.parts) + 1, spec, {"type": "error", "error": "interrupted"}
            )
            await awrite_stream(path, [event], create=False, close=False)
        return
    seqs = iter(range(1_000_000))

    def as_events(payload: dict) -> list[dict]:
        return [_chunk(rid, next(seqs), spec, payload)]

    def marker(error: BaseException) -> dict:
        return _chunk(rid, next(seqs), spec, {"type": "error", "error": _failure_text(error)})

    async def payloads():
        yield {"type": "start", "replyTo": message.message_id, "replyToRole": message.role}
        async for text in spec.reply(history.complete_messages(), message.as_history()):
            if text:
                yield {"type": "delta", "text": text}
        yield {"type": "finish", "replyToRole": message.role}

    await awrite_stream(
        path,
        payloads(),
        encoding=JSONMessages(as_events, error_marker=marker),
        create=False,
        close=False,  # the session goes on
        producer_id=f"agent-{rid}",
    )


def _chunk(rid: str, seq: int, spec: AgentSpec, payload: dict) -> dict:
    return chunk_event(
        message_id=rid,
        seq=seq,
        actor_id=spec.agent_id,
        actor_name=spec.name,
        role=ROLE_ASSISTANT,
        payload=payload,
    )


def _registered_agents(session_id) -> list[AgentSpec]:
    known = catalogue()
    ids = SessionAgent.objects.filter(session_id=session_id).values_list("agent_id", flat=True)
    return [known[agent_id] for agent_id in ids if agent_id in known]


async def respond(path: str, new_events: list[Any]) -> int:
    """Let the session's agents answer the messages ``new_events`` completed.

    Returns how many replies were written.
    """
    session_id = session_id_of(path)
    if session_id is None:
        return 0
    completed = SessionHistory().apply(new_events)
    if not completed:
        return 0
    agents = await sync_to_async(_registered_agents)(session_id)
    if not agents:
        return 0
    history = await sync_to_async(SessionHistory.read)(path)
    jobs = []
    for fresh in completed:
        message = history.messages.get(fresh.message_id, fresh)
        if not message.finished_ok:
            continue
        for spec in agents:
            if spec.wants(message.as_history(), message.reply_to_role):
                jobs.append(reply(path, spec, message, history))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            logger.warning("an agent's reply in %s failed: %r", path, result)
    return len(jobs)
