"""The example AI chat endpoints over HTTP (daphne), without a JS client:
bad input gets a clear 4xx, read routes only read, a failed generation stays
readable and closed. tests/acceptance/test_ai_transports.py drives the same
endpoints with the published npm clients.
"""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.django_db

FAST = {"EXAMPLE_FAKE_TOKENS": "6", "EXAMPLE_FAKE_INTERVAL": "0.01"}


@pytest.fixture(scope="module")
def ai_server(server_factory):
    server = server_factory(DJANGO_SETTINGS_MODULE="tests.ai_settings", **FAST)
    yield server
    server.stop()


def test_a_failed_generation_is_a_readable_closed_stream_that_says_so(ai_server):
    message = {"role": "user", "parts": [{"type": "text", "text": "please fail"}]}
    response = httpx.post(
        f"{ai_server.url}/api/aisdk/chat", json={"id": "f1", "messages": [message]}, timeout=30
    )
    assert response.status_code == 201
    url = response.headers["Location"]
    assert response.json() == {"streamUrl": url}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        read = httpx.get(url + "&offset=-1", timeout=30)
        if read.headers.get("Stream-Closed") == "true":
            break
        time.sleep(0.05)
    assert read.headers.get("Stream-Closed") == "true"
    chunks = read.json()
    assert chunks[-1] == {"type": "error", "errorText": "generation failed"}
    assert [c["type"] for c in chunks[:3]] == ["start", "start-step", "text-start"]
    # Finished: the reconnect endpoint has nothing to resume.
    assert httpx.get(f"{ai_server.url}/api/aisdk/chat/f1/stream", timeout=10).status_code == 204


def test_await_mode_answers_200_with_the_final_offset_of_a_closed_stream(ai_server):
    message = {"role": "user", "parts": [{"type": "text", "text": "hi"}]}
    response = httpx.post(
        f"{ai_server.url}/api/aisdk/chat?mode=await",
        json={"id": "a1", "messages": [message]},
        timeout=30,
    )
    assert response.status_code == 200
    body = response.json()
    read = httpx.get(body["streamUrl"] + "&offset=-1", timeout=30)
    assert read.headers["Stream-Closed"] == "true"
    assert read.headers["Stream-Next-Offset"] == body["finalOffset"]
    assert read.json()[-1] == {"type": "finish", "finishReason": "stop"}


def test_tanstack_send_answers_202_after_the_echo_is_stored(ai_server):
    url = f"{ai_server.url}/api/tanstack/chat?id=s1"
    message = {"id": "m-1", "role": "user", "parts": [{"type": "text", "content": "yo"}]}
    response = httpx.post(url, json={"messages": [message], "data": {}}, timeout=30)
    assert response.status_code == 202 and response.content == b""
    read = httpx.get(f"{ai_server.url}/api/tanstack/chat-stream?id=s1&offset=-1", timeout=30)
    echo = read.json()[:3]
    assert [c["type"] for c in echo] == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
    ]
    assert {c["messageId"] for c in echo} == {"m-1"} and echo[1]["delta"] == "yo"
    assert "Stream-Closed" not in read.headers  # a session stream stays open


def test_chat_endpoints_refuse_bad_input_with_a_clear_4xx(ai_server):
    base = ai_server.url
    bad_json = httpx.post(f"{base}/api/aisdk/chat", content=b"{not json", timeout=10)
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    no_id = httpx.post(f"{base}/api/aisdk/chat", json={"messages": []}, timeout=10)
    assert no_id.status_code == 400
    assert httpx.get(f"{base}/api/aisdk/chat/nochat/stream", timeout=10).status_code == 204
    assert (
        httpx.get(f"{base}/api/aisdk/chat-stream?path=other/x&offset=-1", timeout=10).status_code
        == 404
    )
    no_user = httpx.post(f"{base}/api/tanstack/chat?id=x1", json={"messages": []}, timeout=10)
    assert no_user.status_code == 400
    assert (
        httpx.post(
            f"{base}/api/tanstack/chat?id=../x", json={"messages": []}, timeout=10
        ).status_code
        == 400
    )
    bad_offset = httpx.get(f"{base}/api/tanstack/chat-stream?id=x1&offset=garbage", timeout=10)
    assert bad_offset.status_code == 400
    before = httpx.get(f"{base}/api/tanstack/chat-stream?id=x1&offset=-1", timeout=10)
    write = httpx.post(f"{base}/api/tanstack/chat-stream?id=x1", content=b"[1]", timeout=10)
    assert write.status_code in (403, 405)  # a read route never writes (CSRF or method)
    after = httpx.get(f"{base}/api/tanstack/chat-stream?id=x1&offset=-1", timeout=10)
    assert after.content == before.content
