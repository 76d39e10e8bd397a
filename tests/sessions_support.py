"""Helpers of the Durable Sessions tests (example_project/sessions)."""

from __future__ import annotations

import json

import httpx

from . import admin_session

SESSIONS_POLICY = "example_project.sessions.policy.SessionsPolicy"


def login(client: httpx.Client, server_url: str, username: str, password: str) -> None:
    """Sign in through the sessions' login page; the client keeps the cookies."""
    admin_session.login(client, server_url, username, password, page="/sessions/login/")


def csrf(client: httpx.Client) -> dict[str, str]:
    return {"X-CSRFToken": client.cookies["csrftoken"]}


def post_message(client: httpx.Client, server_url: str, session_id, text: str, **headers: str):
    return client.post(
        f"{server_url}/sessions/{session_id}/messages",
        content=json.dumps({"text": text}),
        headers={"Content-Type": "application/json", **csrf(client), **headers},
    )


def post_presence(client: httpx.Client, server_url: str, session_id, device: str, action: str):
    return client.post(
        f"{server_url}/sessions/{session_id}/presence",
        data={"deviceId": device, "action": action},
        headers=csrf(client),
    )


def events_of(client: httpx.Client, server_url: str, session_id) -> list[dict]:
    response = client.get(f"{server_url}/v1/stream/sessions/{session_id}", params={"offset": "-1"})
    assert response.status_code == 200, response.text
    return response.json()


def chunk_payloads(events: list[dict], message_id: str) -> list[dict]:
    """The chunk payloads of one message, in seq order."""
    rows = [e["value"] for e in events if e.get("type") == "chunk"]
    rows = sorted((r for r in rows if r["messageId"] == message_id), key=lambda r: r["seq"])
    return [json.loads(r["chunk"]) for r in rows]
