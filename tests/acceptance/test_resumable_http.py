"""@resumable over HTTP: a view's streaming response tee'd into a stream,
served from it, and resumed exactly where the client broke off."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def app(server_factory) -> str:
    return server_factory(DJANGO_SETTINGS_MODULE="tests.ai_settings").url


def parse_events(text: str) -> list[dict]:
    """SSE events as dicts of their fields (data lines joined), in order."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = fields[name] + "\n" + value if name in fields else value
        if fields:
            events.append(fields)
    return events


def read_until(response, predicate, deadline: float) -> str:
    """Raw text of a streaming response until ``predicate(text)`` or its end."""
    text = ""
    for chunk in response.iter_text():
        text += chunk
        if predicate(text) or time.monotonic() > deadline:
            break
    return text


def test_eventsource_reconnect_with_last_event_id_gets_exactly_the_missing_events(http, app):
    expected = [f"token {i}" for i in range(30)]
    with http.stream("GET", f"{app}/ai-test/sse?n=30&interval=0.05") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert "?resume=" in response.headers["Resume-URL"]
        text = read_until(response, lambda t: t.count("\n\n") >= 5, time.monotonic() + 30)
    # The client dropped mid-generation; EventSource would send the last id it saw.
    first = parse_events(text[: text.rindex("\n\n") + 2])
    assert [e["data"] for e in first] == expected[: len(first)]
    assert all(e["id"].startswith("ds:") for e in first)
    time.sleep(0.5)  # the generation goes on without any client
    headers = {"Last-Event-ID": first[-1]["id"]}
    with http.stream("GET", f"{app}/ai-test/sse", headers=headers) as response:
        assert response.status_code == 200
        rest = parse_events(read_until(response, lambda t: False, time.monotonic() + 30))
    assert [e["data"] for e in first + rest] == expected


def test_sync_view_resumes_from_the_bytes_the_client_received(http, app):
    expected = "".join(f"word{i} " for i in range(40))
    with http.stream("GET", f"{app}/ai-test/text?n=40&interval=0.03") as response:
        assert response.status_code == 200
        resume_url = response.headers["Resume-URL"]
        assert response.headers["Resume-Offset"] == "0000000000000000_0000000000000000"
        got = read_until(response, lambda t: len(t) >= 30, time.monotonic() + 30)
    r = http.get(f"{resume_url}&received={len(got.encode())}")
    assert r.status_code == 200
    assert got + r.text == expected
    assert r.headers["Content-Type"].startswith("text/plain")


def test_generation_finishes_while_no_client_listens(http, app):
    with http.stream("GET", f"{app}/ai-test/text?n=20&interval=0.05") as response:
        resume_url = response.headers["Resume-URL"]
    time.sleep(2.0)  # 20 x 0.05 s: done by now, with nobody reading
    r = http.get(resume_url)
    assert r.text == "".join(f"word{i} " for i in range(20))


def test_failed_generation_leaves_a_closed_stream_that_says_it_failed(http, app):
    r = http.get(f"{app}/ai-test/failing")
    assert r.status_code == 200  # the body ends; the client does not hang
    events = parse_events(r.text)
    assert [e["data"] for e in events[:3]] == ["token 0", "token 1", "token 2"]
    assert events[-1]["event"] == "error"
    assert "generation failed" in events[-1]["data"]
    assert "fell over" not in r.text  # the exception's text stays in the server log
    again = http.get(r.headers["Resume-URL"])
    assert again.text == r.text


def test_resume_of_an_unknown_generation_or_bad_offset_is_a_clear_4xx(http, app):
    assert http.get(f"{app}/ai-test/sse?resume={'a' * 32}").status_code == 404
    assert http.get(f"{app}/ai-test/sse?resume=nope").status_code == 404
    with http.stream("GET", f"{app}/ai-test/text?n=2&interval=0.01") as response:
        url = response.headers["Resume-URL"]
    assert http.get(f"{url}&offset=garbage").status_code == 400
    assert http.get(f"{url}&received=x").status_code == 400
    assert http.get(f"{url}&received=999999").status_code == 400
