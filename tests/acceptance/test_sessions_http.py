"""Durable Sessions over real HTTP: only members read and write a session.

A daphne server runs the example project with its access policy
(``SessionsPolicy``): session streams are read by members only (their login
cookie, through the lean stream entry point) and written by nobody over the
stream URL; users write through the session views, which check membership.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from ..sessions_support import (
    SESSIONS_POLICY,
    chunk_payloads,
    csrf,
    events_of,
    login,
    post_message,
    post_presence,
)

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-sessions-1"


@pytest.fixture(scope="module")
def sessions_server(server_factory):
    server = server_factory(DS_TEST_POLICY=SESSIONS_POLICY)
    yield server.url
    server.stop()


@pytest.fixture
def people(django_user_model):
    """Three users (ada and alan are members of one session, eve is not), signed in."""
    from durable_streams import api
    from example_project.sessions.models import ChatSession, Membership
    from example_project.sessions.views import register_agent

    suffix = uuid.uuid4().hex[:8]
    users = {
        name: django_user_model.objects.create_user(f"{name}-{suffix}", password=PASSWORD)
        for name in ("ada", "alan", "eve")
    }
    session = ChatSession.objects.create(title="Design review", created_by=users["ada"])
    for name in ("ada", "alan"):
        Membership.objects.create(session=session, user=users[name])
    api.create_stream(session.stream_path, content_type="application/json")
    register_agent(session, "scribe")
    return users, session


@pytest.fixture
def clients(people, sessions_server):
    users, _ = people
    opened = {}
    for name, user in users.items():
        client = httpx.Client(timeout=20)
        login(client, sessions_server, user.username, PASSWORD)
        opened[name] = client
    yield opened
    for client in opened.values():
        client.close()


def test_members_read_the_session_stream_and_others_are_refused(people, clients, sessions_server):
    _, session = people
    url = f"{sessions_server}/v1/stream/{session.stream_path}"
    for member in ("ada", "alan"):
        response = clients[member].get(url, params={"offset": "-1"})
        assert response.status_code == 200, response.text
        assert response.headers["Cache-Control"].startswith("private")
        assert [e["type"] for e in response.json()] == ["agent"]
    assert clients["eve"].get(url, params={"offset": "-1"}).status_code == 403
    assert clients["eve"].head(url).status_code == 403
    assert clients["eve"].get(url, params={"offset": "-1", "live": "sse"}).status_code == 403
    assert httpx.get(url, params={"offset": "-1"}).status_code == 401


def test_nobody_writes_the_session_stream_directly_not_even_a_member(
    people, clients, sessions_server
):
    _, session = people
    url = f"{sessions_server}/v1/stream/{session.stream_path}"
    ada = clients["ada"]
    forged = [{"type": "chunk", "key": "x:0", "value": {}, "headers": {"operation": "insert"}}]
    assert ada.post(url, json=forged).status_code == 403
    assert ada.put(url, headers={"Content-Type": "application/json"}).status_code == 403
    assert ada.delete(url).status_code == 403
    assert ada.post(url, headers={"Stream-Closed": "true"}).status_code == 403
    fork = f"{sessions_server}/v1/stream/stolen-{uuid.uuid4().hex[:8]}"
    assert (
        clients["eve"]
        .put(
            fork,
            headers={
                "Content-Type": "application/json",
                "Stream-Forked-From": f"/v1/stream/{session.stream_path}",
            },
        )
        .status_code
        == 403
    )
    assert [e["type"] for e in events_of(ada, sessions_server, session.pk)] == ["agent"]


def test_a_member_posts_a_message_stamped_with_author_and_txid(people, clients, sessions_server):
    users, session = people
    txid = f"tx-{uuid.uuid4().hex}"
    response = post_message(
        clients["alan"], sessions_server, session.pk, " hello all ", **{"X-Txid": txid}
    )
    assert response.status_code == 201, response.text
    message_id = response.json()["messageId"]
    assert response.headers["X-Txid"] == txid
    events = events_of(clients["ada"], sessions_server, session.pk)
    (chunk,) = [e for e in events if e["type"] == "chunk"]
    assert chunk["key"] == f"{message_id}:0"
    assert chunk["headers"]["txid"] == txid
    assert chunk["value"]["actorId"] == f"user-{users['alan'].pk}"
    assert chunk["value"]["actorName"] == users["alan"].username
    assert chunk["value"]["role"] == "user"
    assert chunk_payloads(events, message_id) == [{"type": "message", "text": "hello all"}]


def test_a_non_member_cannot_post_open_or_announce_in_a_session(people, clients, sessions_server):
    _, session = people
    eve = clients["eve"]
    assert post_message(eve, sessions_server, session.pk, "let me in").status_code == 403
    assert post_presence(eve, sessions_server, session.pk, "tab-1", "join").status_code == 403
    assert eve.get(f"{sessions_server}/sessions/{session.pk}/").status_code == 403
    anonymous = httpx.get(f"{sessions_server}/sessions/{session.pk}/")
    assert anonymous.status_code == 302 and "/sessions/login/" in anonymous.headers["Location"]
    assert [e["type"] for e in events_of(clients["ada"], sessions_server, session.pk)] == ["agent"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"text": ""}', b'{"text": 5}', b'{"text": "' + b"x" * 4001 + b'"}'],
)
def test_a_bad_message_is_a_400_and_writes_nothing(people, clients, sessions_server, body):
    _, session = people
    ada = clients["ada"]
    response = ada.post(
        f"{sessions_server}/sessions/{session.pk}/messages",
        content=body,
        headers={"Content-Type": "application/json", **csrf(ada)},
    )
    assert response.status_code == 400, response.text
    assert "error" in response.json()
    assert [e["type"] for e in events_of(ada, sessions_server, session.pk)] == ["agent"]


def test_presence_events_only_on_a_change_of_status(people, clients, sessions_server):
    users, session = people
    ada = clients["ada"]
    for action in ("join", "beat", "beat", "leave", "join"):
        assert post_presence(ada, sessions_server, session.pk, "tab-a", action).status_code == 200
    assert post_presence(ada, sessions_server, session.pk, "bad id!", "join").status_code == 400
    assert post_presence(ada, sessions_server, session.pk, "tab-a", "dance").status_code == 400
    presence = [e for e in events_of(ada, sessions_server, session.pk) if e["type"] == "presence"]
    key = f"user-{users['ada'].pk}:tab-a"
    assert [(e["key"], e["headers"]["operation"], e["value"]["status"]) for e in presence] == [
        (key, "insert", "online"),
        (key, "update", "offline"),
        (key, "update", "online"),
    ]


def test_creating_a_session_and_inviting_a_member_over_the_pages(people, clients, sessions_server):
    users, _ = people
    ada = clients["ada"]
    page = ada.get(f"{sessions_server}/sessions/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    created = ada.post(
        f"{sessions_server}/sessions/",
        data={"csrfmiddlewaretoken": token, "title": "Launch plan", "agents": ["scribe", "tally"]},
    )
    assert created.status_code == 302
    session_url = sessions_server + created.headers["Location"]
    session_id = created.headers["Location"].strip("/").split("/")[-1]
    assert clients["eve"].get(session_url).status_code == 403
    invited = ada.post(
        f"{session_url}invite",
        data={"csrfmiddlewaretoken": token, "username": users["eve"].username},
    )
    assert invited.status_code == 302
    page = clients["eve"].get(session_url)
    assert page.status_code == 200 and "Launch plan" in page.text
    agents = [
        e for e in events_of(clients["eve"], sessions_server, session_id) if e["type"] == "agent"
    ]
    assert sorted(e["key"] for e in agents) == ["scribe", "tally"]
    assert {e["value"]["triggers"] for e in agents} == {"user-messages", "all"}
