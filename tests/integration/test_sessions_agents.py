"""Durable Sessions' agents and presence against Postgres (example_project/sessions).

The runner's reply step (:func:`runner.respond`): which agents answer which
message (their trigger), and the reply written by the token writer as chunk
events; and the presence sweep.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from durable_streams import api, state
from example_project.sessions import presence, runner
from example_project.sessions.agents import scribe_tokens
from example_project.sessions.models import ChatSession, Membership, Presence
from example_project.sessions.schema import chunk_event, new_message_id
from example_project.sessions.views import register_agent

from ..support import close_executor_connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_agents(monkeypatch):
    monkeypatch.setenv("SESSIONS_OFFLINE_TOKEN_SECONDS", "0")
    yield
    close_executor_connections()


def make_session(django_user_model, *agents: str) -> ChatSession:
    user = django_user_model.objects.create_user(f"u-{new_message_id()[-8:]}", password="x")
    session = ChatSession.objects.create(title="t", created_by=user)
    Membership.objects.create(session=session, user=user)
    api.create_stream(session.stream_path, content_type="application/json")
    for agent_id in agents:
        register_agent(session, agent_id)
    return session


def say(session: ChatSession, text: str) -> dict:
    event = chunk_event(
        message_id=new_message_id(),
        seq=0,
        actor_id="user-1",
        actor_name="ada",
        role="user",
        payload={"type": "message", "text": text},
    )
    state.append_events(session.stream_path, [event])
    return event


def chunks(session: ChatSession) -> list[dict]:
    return [e for e in api.read_json(session.stream_path)[0] if e.get("type") == "chunk"]


def reply_of(session: ChatSession, agent_id: str, message_id: str) -> list[tuple[str, dict]]:
    rid = runner.reply_id(agent_id, message_id)
    rows = [e for e in chunks(session) if e["value"]["messageId"] == rid]
    return [(e["key"], json.loads(e["value"]["chunk"])) for e in rows]


async def test_scribe_streams_its_deterministic_reply_as_chunk_events(django_user_model):
    session = await _sync(make_session, django_user_model, "scribe")
    text = "please take minutes of the launch review"
    said = await _sync(say, session, text)
    message_id = said["value"]["messageId"]

    assert await runner.respond(session.stream_path, [said]) == 1

    reply = await _sync(reply_of, session, "scribe", message_id)
    rid = runner.reply_id("scribe", message_id)
    assert [key for key, _ in reply] == [f"{rid}:{n}" for n in range(len(reply))]
    payloads = [p for _, p in reply]
    assert payloads[0] == {"type": "start", "replyTo": message_id, "replyToRole": "user"}
    assert [p["text"] for p in payloads[1:-1]] == scribe_tokens(text)
    assert payloads[-1] == {"type": "finish", "replyToRole": "user"}
    row = (await _sync(chunks, session))[-1]["value"]
    assert (row["actorId"], row["actorName"], row["role"]) == (
        "scribe",
        "Scribe (offline)",
        "assistant",
    )


async def test_triggers_all_answers_agents_replies_to_users_and_nothing_loops(django_user_model):
    session = await _sync(make_session, django_user_model, "scribe", "tally")
    said = await _sync(say, session, "hello agents")
    message_id = said["value"]["messageId"]

    # A user's message: both answer (user-messages and all).
    assert await runner.respond(session.stream_path, [said]) == 2
    scribe_rid = runner.reply_id("scribe", message_id)
    tally_rid = runner.reply_id("tally", message_id)
    events = await _sync(chunks, session)
    scribes = [e for e in events if e["value"]["messageId"] == scribe_rid]
    talliess = [e for e in events if e["value"]["messageId"] == tally_rid]

    # Scribe's answer to a user: tally ("all") answers it, scribe does not answer itself.
    assert await runner.respond(session.stream_path, scribes) == 1
    assert await _sync(reply_of, session, "tally", scribe_rid)
    # Tally's answers: nobody answers them (scribe takes user messages only,
    # tally never answers itself), so two agents cannot talk forever.
    assert await runner.respond(session.stream_path, talliess) == 0
    tally_on_scribe = runner.reply_id("tally", scribe_rid)
    events = await _sync(chunks, session)
    assert (
        await runner.respond(
            session.stream_path, [e for e in events if e["value"]["messageId"] == tally_on_scribe]
        )
        == 0
    )


async def test_a_reply_cut_short_is_ended_once_and_never_written_twice(django_user_model):
    session = await _sync(make_session, django_user_model, "scribe")
    said = await _sync(say, session, "one two three")
    message_id = said["value"]["messageId"]
    rid = runner.reply_id("scribe", message_id)
    # A runner died after writing the start and one token of its reply.
    cut = [
        chunk_event(
            message_id=rid,
            seq=0,
            actor_id="scribe",
            actor_name="Scribe",
            role="assistant",
            payload={"type": "start", "replyTo": message_id, "replyToRole": "user"},
        ),
        chunk_event(
            message_id=rid,
            seq=1,
            actor_id="scribe",
            actor_name="Scribe",
            role="assistant",
            payload={"type": "delta", "text": "Scribe "},
        ),
    ]
    await _sync(state.append_events, session.stream_path, cut)

    # The wake is taken again: the reply is ended, not restarted.
    assert await runner.respond(session.stream_path, [said]) == 1
    assert await runner.respond(session.stream_path, [said]) == 1
    reply = await _sync(reply_of, session, "scribe", message_id)
    assert [key for key, _ in reply] == [f"{rid}:0", f"{rid}:1", f"{rid}:2"]
    assert reply[-1][1] == {"type": "error", "error": "interrupted"}


async def test_an_agent_that_fails_ends_its_reply_with_an_error_chunk(
    django_user_model, monkeypatch
):
    from example_project.sessions import agents

    async def broken(history, message):
        yield "half a "
        raise RuntimeError("upstream said no (secret details)")

    spec = agents.AgentSpec("scribe", "Scribe (offline)", agents.USER_MESSAGES, "offline", broken)
    monkeypatch.setattr(runner, "catalogue", lambda: {"scribe": spec})
    session = await _sync(make_session, django_user_model, "scribe")
    said = await _sync(say, session, "go")
    assert await runner.respond(session.stream_path, [said]) == 1
    payloads = [p for _, p in await _sync(reply_of, session, "scribe", said["value"]["messageId"])]
    assert payloads[1:] == [
        {"type": "delta", "text": "half a "},
        {"type": "error", "error": "generation failed"},
    ]


def test_the_sweep_marks_a_silent_device_offline_and_leaves_live_ones(django_user_model):
    session = make_session(django_user_model)
    kwargs = {"session": session, "user_name": "ada", "actor_id": "user-1"}
    silent = presence.set_status(device_id="tab-old", **kwargs)
    live = presence.set_status(device_id="tab-new", **kwargs)
    long_ago = timezone.now() - dt.timedelta(seconds=presence.OFFLINE_AFTER_SECONDS + 1)
    with state.paused():
        Presence.objects.filter(pk=silent.pk).update(last_seen=long_ago)

    assert presence.sweep() == 1
    assert presence.sweep() == 0
    statuses = {p.device_id: p.status for p in Presence.objects.filter(session=session)}
    assert statuses == {"tab-old": "offline", "tab-new": "online"}
    updates = [
        (e["key"], e["value"]["status"])
        for e in api.read_json(session.stream_path)[0]
        if e.get("type") == "presence" and e["headers"]["operation"] == "update"
    ]
    assert updates == [("user-1:tab-old", "offline")]
    assert live.status == "online"


async def _sync(fn, *args):
    from asgiref.sync import sync_to_async

    return await sync_to_async(fn)(*args)
