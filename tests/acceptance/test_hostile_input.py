"""Hostile and unusual input over real HTTP (issue 10): integer headers past
Python's 4,300-digit int limit, JSON with huge number literals, absolute-form
request targets, and the two 409s official clients classify by their content
(a producer's close of a closed stream, a Stream-Seq regression)."""

from __future__ import annotations

import json

import pytest

from ..support import absolute_form_append_and_read, unique

# Only the servers write; the marker sets up the test database (tests/conftest.py).
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=["lean-app", "django-app"])
def any_server(request, ds_server, second_server):
    return ds_server if request.param == "lean-app" else second_server


# --- integer headers ------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [4300, 4301, 10_000])
@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("POST", "Producer-Seq"),
        ("POST", "Producer-Epoch"),
        ("PUT", "Stream-TTL"),
        ("PUT", "Stream-Fork-Sub-Offset"),
    ],
)
def test_integer_headers_of_any_length_answer_400_naming_the_header(
    http, ds_server, method, name, digits
):
    source = ds_server.stream_url(unique("src"))
    assert http.put(source, headers=TEXT, content=b"abc").status_code == 201
    value = "9" * digits
    if name.startswith("Producer"):
        url = source
        headers = {**TEXT, "Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"}
    else:
        url = ds_server.stream_url(unique("new"))
        headers = dict(TEXT)
        if name == "Stream-Fork-Sub-Offset":
            headers["Stream-Forked-From"] = "/v1/stream/" + source.rsplit("/", 1)[1]
            headers["Stream-Fork-Offset"] = "-1"
    headers[name] = value
    response = http.request(method, url, headers=headers, content=b"x")
    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert name in response.text and "at most" in response.text
    assert http.get(source).content == b"abc"


@pytest.mark.parametrize("digits", [4300, 4301])
def test_a_huge_cursor_is_ignored_not_a_500(http, ds_server, digits):
    url = ds_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"abc")
    response = http.get(url, params={"offset": "-1", "live": "long-poll", "cursor": "9" * digits})
    assert response.status_code == 200
    assert response.content == b"abc"
    assert len(response.headers["Stream-Cursor"]) < 20


# --- JSON with huge numbers --------------------------------------------------------------------


def test_json_with_a_5000_digit_integer_is_stored_as_sent(http, any_server):
    url = any_server.stream_url(unique("bignum"))
    big = "7" * 5000
    initial = f'[{{"n": -{big}}}]'.encode()
    assert http.put(url, headers=JSON, content=initial).status_code == 201
    body = f'[{big}, {{"x": {big}.5e-3}}, 1e999]'.encode()
    assert http.post(url, headers=JSON, content=body).status_code == 204
    stored = http.get(url).content
    assert stored == f'[{{"n": -{big}}},{big},{{"x": {big}.5e-3}},1e999]'.encode()
    # Still JSON that any parser without a digit limit reads.
    assert len(json.loads(stored, parse_int=str)) == 4


@pytest.mark.parametrize("body", [b"[01]", b"[1.]", b"[-]", b"[.5]", b"[1e]", b"[NaN]", b"[+1]"])
def test_json_numbers_are_still_checked_by_the_grammar(http, ds_server, body):
    url = ds_server.stream_url(unique())
    http.put(url, headers=JSON)
    response = http.post(url, headers=JSON, content=body)
    assert response.status_code == 400, (body, response.status_code)
    assert "not valid JSON" in response.text


# --- absolute-form request targets (RFC 9112 3.2.2) --------------------------------------------


def test_absolute_form_request_targets_are_served_by_both_entry_points(http, any_server):
    # daphne passes the whole URL on as the ASGI path: the lean app reduces it
    # itself, the URLconf entry point through OriginFormMiddleware.
    path = unique("absolute")
    url = any_server.stream_url(path)
    assert http.put(url, headers=TEXT, content=b"a").status_code == 201
    assert absolute_form_append_and_read(any_server.port, path) == b"ab"
    assert http.get(url).content == b"ab"


# --- 409s clients classify ---------------------------------------------------------------------


def producer(pid: str, epoch: int, seq: int) -> dict[str, str]:
    return {"Producer-Id": pid, "Producer-Epoch": str(epoch), "Producer-Seq": str(seq)}


def test_a_second_producers_close_of_a_closed_stream_is_409_stream_closed(http, any_server):
    # Spec 5.2.1; the official client conformance case idempotent-producer-close-conflict.
    url = any_server.stream_url(unique("close-conflict"))
    http.put(url, headers=TEXT)
    assert http.post(url, headers={**TEXT, **producer("p1", 0, 0)}, content=b"a").status_code == 200
    closing = {**producer("p1", 0, 1), "Stream-Closed": "true"}
    assert http.post(url, headers=closing).status_code == 204
    assert http.post(url, headers=closing).status_code == 204  # its own retry
    other = http.post(url, headers={**producer("p2", 0, 0), "Stream-Closed": "true"})
    assert other.status_code == 409
    assert other.headers["Stream-Closed"] == "true"
    assert http.post(url, headers={"Stream-Closed": "true"}).status_code == 204
    assert http.get(url).content == b"a"


def test_a_stream_seq_regression_409_says_sequence(http, any_server):
    # The official TypeScript client classifies the 409 by this word
    # (seq-conflict-detection in its conformance suite).
    url = any_server.stream_url(unique("seq"))
    http.put(url, headers=TEXT)
    assert http.post(url, headers={**TEXT, "Stream-Seq": "b"}, content=b"1").status_code == 204
    response = http.post(url, headers={**TEXT, "Stream-Seq": "a"}, content=b"2")
    assert response.status_code == 409
    assert "sequence" in response.text.lower()
