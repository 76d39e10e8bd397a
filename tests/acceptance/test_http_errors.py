"""Bad input over real HTTP: malformed headers, offsets, paths and bodies get a
4xx with the security headers, never a 500; bodies over MAX_APPEND_SIZE get 413."""

from __future__ import annotations

import random

import httpx
import pytest

from durable_streams import offsets

from ..support import raw_http, unique

# Only the servers and child processes write, so every read sees committed data;
# the marker sets up the test database (see tests/conftest.py). No flush needed.
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def text_stream(http, stream_url) -> str:
    """A text stream holding b"abc"."""
    assert http.put(stream_url, headers=TEXT, content=b"abc").status_code == 201
    return stream_url


def assert_client_error(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert response.headers["Cache-Control"] == "no-store"


# --- offsets and query parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"offset": "abc"},
        {"offset": "3"},
        {"offset": "1_2"},
        {"offset": "0000000000000000_00000000000000003"},
        {"offset": "0000000000000000_000000000000000a"},
        {"offset": "-2"},
        {"offset": "NOW"},
        {"offset": ""},
        {"offset": "\u00e9"},
        {"offset": offsets.encode(4)},  # past the tail
        {"offset": offsets.encode(offsets.MAX_POSITION)},
        [("offset", "-1"), ("offset", "-1")],
        {"offset": "-1", "live": "bogus"},
        {"offset": "-1", "live": ""},
        {"live": "long-poll"},
        {"live": "sse"},
        {"offset": "abc", "live": "long-poll"},
        {"offset": "abc", "live": "sse"},
        {"offset": offsets.encode(4), "live": "long-poll"},
        {"offset": offsets.encode(4), "live": "sse"},
    ],
)
def test_malformed_or_impossible_read_parameters_are_400(http, text_stream, params):
    assert_client_error(http.get(text_stream, params=params))


def test_invalid_utf8_in_the_query_string_is_400(http, text_stream):
    assert_client_error(http.get(text_stream + "?offset=%ff%fe"))


# --- create headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", ["+1", "01", "1.0", "1e3", "-1", "abc", "", "0x10", "9" * 30])
def test_malformed_stream_ttl_is_400(http, stream_url, ttl):
    assert_client_error(http.put(stream_url, headers={**TEXT, "Stream-TTL": ttl}))
    assert http.head(stream_url).status_code == 404


@pytest.mark.parametrize(
    "expires_at",
    [
        "tomorrow",
        "2099-01-01",
        "2099-01-01T00:00:00",  # no offset
        "2099-13-01T00:00:00Z",
        "2099-02-30T00:00:00Z",
        "2099-01-01T24:00:00Z",
        "2099-01-01T00:00:00+25:00",
        "0000-01-01T00:00:00Z",
        "1735689600",
    ],
)
def test_malformed_stream_expires_at_is_400(http, stream_url, expires_at):
    assert_client_error(http.put(stream_url, headers={**TEXT, "Stream-Expires-At": expires_at}))


def test_ttl_and_expires_at_together_are_400(http, stream_url):
    headers = {**TEXT, "Stream-TTL": "60", "Stream-Expires-At": "2099-01-01T00:00:00Z"}
    assert_client_error(http.put(stream_url, headers=headers))


@pytest.mark.parametrize("content_type", ["plain", "a/b/c", "/json", "text/", "te xt/plain"])
def test_invalid_content_type_on_create_is_400(http, stream_url, content_type):
    assert_client_error(http.put(stream_url, headers={"Content-Type": content_type}))


@pytest.mark.parametrize(
    "headers",
    [
        {"Stream-Fork-Offset": offsets.encode(0)},
        {"Stream-Fork-Sub-Offset": "1"},
    ],
)
def test_fork_headers_without_a_source_are_400(http, stream_url, headers):
    assert_client_error(http.put(stream_url, headers={**TEXT, **headers}))


def test_invalid_json_on_create_is_400_and_creates_nothing(http, stream_url):
    assert_client_error(
        http.put(stream_url, headers={"Content-Type": "application/json"}, content=b"{oops")
    )
    assert http.head(stream_url).status_code == 404


# --- append headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "producer",
    [
        {"Producer-Id": "p"},
        {"Producer-Id": "p", "Producer-Epoch": "0"},
        {"Producer-Epoch": "0", "Producer-Seq": "0"},
        {"Producer-Id": "", "Producer-Epoch": "0", "Producer-Seq": "0"},
        {"Producer-Id": "p", "Producer-Epoch": "-1", "Producer-Seq": "0"},
        {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "x"},
        {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "1.5"},
        {"Producer-Id": "p", "Producer-Epoch": str(2**53), "Producer-Seq": "0"},
        {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "9" * 400},
        {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": b"\xb2"},  # superscript 2
    ],
)
def test_malformed_producer_headers_are_400_and_write_nothing(http, text_stream, producer):
    assert_client_error(http.post(text_stream, headers={**TEXT, **producer}, content=b"x"))
    assert http.get(text_stream).content == b"abc"


def test_control_characters_in_header_values_are_rejected(ds_server, text_stream):
    path = text_stream.split("/v1/stream/", 1)[1]
    for name in (b"Stream-Seq", b"Producer-Id"):
        request = (
            b"POST /v1/stream/" + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 1\r\n"
            b"Producer-Epoch: 0\r\nProducer-Seq: 0\r\n" + name + b": a\x00b\r\n\r\nx"
        )
        status, _ = raw_http(ds_server.port, request)
        assert 400 <= status < 500


def test_non_ascii_stream_seq_is_accepted_and_compared_byte_wise(http, text_stream):
    assert (
        http.post(text_stream, headers={**TEXT, "Stream-Seq": b"\xe9"}, content=b"1").status_code
        == 204
    )
    assert (
        http.post(text_stream, headers={**TEXT, "Stream-Seq": b"z"}, content=b"2").status_code
        == 409
    )


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [b"/v1/stream/a/../b", b"/v1/stream/a/./b", b"/v1/stream/a%00b", b"/v1/stream/a/%2e%2e/b"],
)
def test_traversal_and_nul_paths_are_400(ds_server, raw_path):
    status, response = raw_http(
        ds_server.port, b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status == 400
    assert b"nosniff" in response.lower()


def test_overlong_path_is_400(http, server):
    assert_client_error(http.put(f"{server}/v1/stream/{'x' * 1100}", headers=TEXT))


def test_unicode_paths_work(http, server):
    url = f"{server}/v1/stream/caf\u00e9/\u2603/{unique()}"
    assert http.put(url, headers=TEXT, content=b"ok").status_code == 201
    assert http.get(url).content == b"ok"


# --- limits that must be a 4xx, not a database error (500) ------------------------------------


def test_overlong_content_type_is_a_client_error_not_a_500(http, stream_url):
    response = http.put(stream_url, headers={"Content-Type": "text/" + "x" * 300})
    assert 400 <= response.status_code < 500, response.status_code


def test_path_too_large_for_the_database_index_is_a_client_error_not_a_500(http, server):
    rng = random.Random(7)
    # 1000 characters (under the length limit) but ~4000 bytes of UTF-8.
    path = "".join(chr(rng.randrange(0x1F300, 0x1FAFF)) for _ in range(1000))
    response = http.put(f"{server}/v1/stream/{path}", headers=TEXT)
    assert 400 <= response.status_code < 500, response.status_code


def test_huge_producer_id_is_a_client_error_not_a_500(http, text_stream):
    rng = random.Random(8)
    producer_id = "".join(chr(rng.randrange(33, 127)) for _ in range(9000))
    response = http.post(
        text_stream,
        headers={**TEXT, "Producer-Id": producer_id, "Producer-Epoch": "0", "Producer-Seq": "0"},
        content=b"x",
    )
    assert 400 <= response.status_code < 500, response.status_code
    assert http.get(text_stream).content == b"abc"


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_expires_at_beyond_the_storable_range_is_a_400_that_creates_nothing(
    http, stream_url, expires_at
):
    # In UTC these are the years 10000 and 0, outside what the server can store.
    response = http.put(stream_url, headers={**TEXT, "Stream-Expires-At": expires_at})
    assert_client_error(response, 400)
    assert http.head(stream_url).status_code == 404


def test_random_garbage_requests_never_cause_a_500(http, server, text_stream):
    """A deterministic fuzz over methods, paths, query strings and headers."""
    rng = random.Random(2024)
    nasty = [
        "",
        "-1",
        "now",
        "true",
        "0",
        "-0",
        "1e999",
        "9" * 40,
        "NaN",
        "../x",
        "\u00ff\u00fe",
        "a,b",
        "text/plain",
        "application/json",
        "0000000000000000_0000000000000003",
        "0000000000000000_0000000000000004",
        "2099-01-01T00:00:00Z",
    ]
    header_names = [
        "Content-Type",
        "Stream-TTL",
        "Stream-Expires-At",
        "Stream-Seq",
        "Stream-Closed",
        "Producer-Id",
        "Producer-Epoch",
        "Producer-Seq",
        "Stream-Forked-From",
        "Stream-Fork-Offset",
        "Stream-Fork-Sub-Offset",
        "If-None-Match",
    ]
    bodies = [b"", b"x", b"[]", b"[1,2]", b"{", b"\xff\xfe", b'"s"', b"NaN"]
    targets = [text_stream, f"{server}/v1/stream/{unique('fuzz')}"]
    # Live reads go to a closed stream, so none of them waits for a timeout.
    closed = f"{server}/v1/stream/{unique('closed')}"
    http.put(closed, headers={**TEXT, "Stream-Closed": "true"}, content=b"end")
    statuses = set()
    for _ in range(250):
        method = rng.choice(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"])
        headers = {name: rng.choice(nasty) for name in rng.sample(header_names, rng.randint(0, 5))}
        params = {}
        if rng.random() < 0.7:
            params["offset"] = rng.choice(nasty)
        if rng.random() < 0.3:
            params["live"] = rng.choice(["long-poll", "sse", "x"])
        target = closed if "live" in params else rng.choice(targets)
        body = rng.choice(bodies) if method in ("PUT", "POST") else b""
        # No request may hang: a read timeout fails the test.
        response = http.request(
            method,
            target,
            params=params,
            headers={k: v.encode("latin-1") for k, v in headers.items()},
            content=body,
            timeout=10,
        )
        statuses.add(response.status_code)
        assert response.status_code < 500, (method, params, headers, body, response.text)
    assert len(statuses) > 3


# --- 413 --------------------------------------------------------------------------------------


def test_body_over_max_append_size_is_413_and_writes_nothing(http, small_limit_server):
    url = small_limit_server.stream_url(unique())
    http.put(url, headers=TEXT)
    response = http.post(url, headers=TEXT, content=b"x" * 1025)
    assert response.status_code == 413
    assert http.head(url).headers["Stream-Next-Offset"] == offsets.encode(0)


def test_413_carries_the_security_and_cors_headers_of_every_error(http, small_limit_server):
    url = small_limit_server.stream_url(unique())
    http.put(url, headers=TEXT)
    response = http.post(url, headers={**TEXT, "Origin": "https://a.example"}, content=b"x" * 1025)
    assert_client_error(response, 413)
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_body_of_exactly_max_append_size_is_accepted(http, small_limit_server):
    url = small_limit_server.stream_url(unique())
    http.put(url, headers=TEXT)
    response = http.post(url, headers=TEXT, content=b"x" * 1024)
    assert response.status_code == 204
    assert response.headers["Stream-Next-Offset"] == offsets.encode(1024)


def test_chunked_body_over_max_append_size_is_413_and_writes_nothing(http, small_limit_server):
    url = small_limit_server.stream_url(unique())
    http.put(url, headers=TEXT)

    def chunks():
        for _ in range(11):
            yield b"y" * 100

    response = http.post(url, headers=TEXT, content=chunks())
    assert response.status_code == 413
    assert http.get(url).content == b""


def test_create_with_an_initial_body_over_the_limit_is_413_and_creates_nothing(
    http, small_limit_server
):
    url = small_limit_server.stream_url(unique())
    assert http.put(url, headers=TEXT, content=b"z" * 2000).status_code == 413
    assert http.head(url).status_code == 404
