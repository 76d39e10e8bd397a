"""The protocol over real HTTP (daphne subprocess): status codes and headers of
PUT, POST, GET, HEAD, DELETE and OPTIONS, and the browser security headers."""

from __future__ import annotations

import json

import pytest

from durable_streams import offsets

from ..support import read_all, unique

# Only the servers and child processes write, so every read sees committed data;
# the marker sets up the test database (see tests/conftest.py). No flush needed.
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}


def off(position: int) -> str:
    return offsets.encode(position)


def assert_security_headers(response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


# --- PUT --------------------------------------------------------------------------------------


def test_put_creates_with_201_location_type_and_tail(http, stream_url):
    response = http.put(stream_url, headers=TEXT, content=b"hello")
    assert response.status_code == 201
    assert response.headers["Location"] == stream_url
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["Stream-Next-Offset"] == off(5)
    assert response.headers["Cache-Control"] == "no-store"
    assert "Stream-Closed" not in response.headers
    assert response.content == b""
    assert_security_headers(response)


def test_put_again_with_the_same_config_is_200_without_location(http, stream_url):
    http.put(stream_url, headers={**TEXT, "Stream-TTL": "3600"})
    response = http.put(stream_url, headers={**TEXT, "Stream-TTL": "3600"})
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert response.headers["Stream-TTL"] == "3600"


@pytest.mark.parametrize(
    "headers",
    [JSON, {**TEXT, "Stream-TTL": "60"}, {**TEXT, "Stream-Closed": "true"}],
)
def test_put_with_a_different_config_is_409(http, stream_url, headers):
    http.put(stream_url, headers=TEXT)
    response = http.put(stream_url, headers=headers)
    assert response.status_code == 409
    assert_security_headers(response)


def test_put_closed_creates_a_closed_stream_and_matches_only_closed_puts(http, stream_url):
    response = http.put(stream_url, headers={**TEXT, "Stream-Closed": "true"}, content=b"done")
    assert response.status_code == 201
    assert response.headers["Stream-Closed"] == "true"
    assert http.put(stream_url, headers={**TEXT, "Stream-Closed": "TRUE"}).status_code == 200
    assert http.put(stream_url, headers=TEXT).status_code == 409


@pytest.mark.parametrize("value", ["false", "yes", "1", ""])
def test_stream_closed_values_other_than_true_are_ignored(http, stream_url, value):
    response = http.put(stream_url, headers={**TEXT, "Stream-Closed": value})
    assert response.status_code == 201
    assert "Stream-Closed" not in response.headers
    response = http.post(stream_url, headers={**TEXT, "Stream-Closed": value}, content=b"x")
    assert response.status_code == 204
    assert "Stream-Closed" not in http.head(stream_url).headers


def test_put_without_content_type_defaults_to_octet_stream(http, stream_url):
    response = http.put(stream_url)
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_put_json_with_an_initial_batch_and_with_an_empty_array(http, server):
    url = f"{server}/v1/stream/{unique()}"
    response = http.put(url, headers=JSON, content=b'[{"a":1},{"b":2}]')
    assert (response.status_code, response.headers["Stream-Next-Offset"]) == (201, off(2))
    empty = f"{server}/v1/stream/{unique()}"
    response = http.put(empty, headers=JSON, content=b"[]")
    assert (response.status_code, response.headers["Stream-Next-Offset"]) == (201, off(0))
    assert http.get(empty).content == b"[]"


def test_put_with_ttl_and_with_expires_at_echoes_them(http, server):
    response = http.put(f"{server}/v1/stream/{unique()}", headers={"Stream-TTL": "120"})
    assert response.headers["Stream-TTL"] == "120"
    response = http.put(
        f"{server}/v1/stream/{unique()}",
        headers={"Stream-Expires-At": "2099-01-02T03:04:05+02:00"},
    )
    assert response.headers["Stream-Expires-At"] == "2099-01-02T01:04:05Z"


# --- POST -------------------------------------------------------------------------------------


def test_post_appends_with_204_and_the_new_tail(http, stream_url):
    http.put(stream_url, headers=TEXT)
    response = http.post(stream_url, headers=TEXT, content=b"abc")
    assert response.status_code == 204
    assert response.headers["Stream-Next-Offset"] == off(3)
    assert response.headers["Cache-Control"] == "no-store"
    assert "Content-Type" not in response.headers
    assert response.content == b""
    response = http.post(stream_url, headers=TEXT, content=b"de")
    assert response.headers["Stream-Next-Offset"] == off(5)


def test_post_to_a_missing_stream_is_404(http, stream_url):
    response = http.post(stream_url, headers=TEXT, content=b"x")
    assert response.status_code == 404
    assert_security_headers(response)


def test_post_with_an_empty_body_is_400(http, stream_url):
    http.put(stream_url, headers=TEXT)
    assert http.post(stream_url, headers=TEXT).status_code == 400


def test_post_with_a_mismatched_content_type_is_409(http, stream_url):
    http.put(stream_url, headers=TEXT)
    assert http.post(stream_url, headers=JSON, content=b"1").status_code == 409


def test_post_with_a_body_and_no_content_type_is_400(http, stream_url):
    http.put(stream_url, headers=TEXT)
    response = http.post(stream_url, content=b"x")
    assert response.status_code == 400


def test_post_json_batches_are_flattened_one_level(http, stream_url):
    http.put(stream_url, headers=JSON)
    response = http.post(stream_url, headers=JSON, content=b'[{"a":1},[2,3]]')
    assert response.headers["Stream-Next-Offset"] == off(2)
    http.post(stream_url, headers=JSON, content=b'"solo"')
    assert json.loads(http.get(stream_url).content) == [{"a": 1}, [2, 3], "solo"]


@pytest.mark.parametrize("body", [b"[]", b"{", b"NaN", b"[1,]", b"\xff"])
def test_post_invalid_json_is_400(http, stream_url, body):
    http.put(stream_url, headers=JSON)
    assert http.post(stream_url, headers=JSON, content=body).status_code == 400


def test_post_close_only_closes_idempotently(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    for _ in range(2):
        response = http.post(stream_url, headers={"Stream-Closed": "true"})
        assert response.status_code == 204
        assert response.headers["Stream-Closed"] == "true"
        assert response.headers["Stream-Next-Offset"] == off(3)


def test_close_only_ignores_any_content_type(http, stream_url):
    http.put(stream_url, headers=TEXT)
    response = http.post(stream_url, headers={**JSON, "Stream-Closed": "true"})
    assert response.status_code == 204


def test_post_to_a_closed_stream_is_409_with_closed_and_final_offset(http, stream_url):
    http.put(stream_url, headers=TEXT)
    http.post(stream_url, headers={**TEXT, "Stream-Closed": "true"}, content=b"end")
    for headers in (TEXT, {**TEXT, "Stream-Closed": "true"}, JSON):
        response = http.post(stream_url, headers=headers, content=b"1")
        assert response.status_code == 409
        assert response.headers["Stream-Closed"] == "true"
        assert response.headers["Stream-Next-Offset"] == off(3)


def test_producer_responses_200_204_403_409_400(http, stream_url):
    http.put(stream_url, headers=TEXT)

    def send(epoch, seq, body=b"x"):
        return http.post(
            stream_url,
            headers={
                **TEXT,
                "Producer-Id": "p1",
                "Producer-Epoch": str(epoch),
                "Producer-Seq": str(seq),
            },
            content=body,
        )

    ok = send(0, 0)
    assert (ok.status_code, ok.headers["Producer-Epoch"], ok.headers["Producer-Seq"]) == (
        200,
        "0",
        "0",
    )
    dup = send(0, 0)
    assert (dup.status_code, dup.headers["Producer-Seq"]) == (204, "0")
    gap = send(0, 5)
    assert gap.status_code == 409
    assert (gap.headers["Producer-Expected-Seq"], gap.headers["Producer-Received-Seq"]) == (
        "1",
        "5",
    )
    assert send(1, 3).status_code == 400
    assert send(1, 0).status_code == 200
    stale = send(0, 1)
    assert (stale.status_code, stale.headers["Producer-Epoch"]) == (403, "1")
    assert http.get(stream_url).content == b"xx"


def test_stream_seq_regression_is_409(http, stream_url):
    http.put(stream_url, headers=TEXT)
    assert (
        http.post(stream_url, headers={**TEXT, "Stream-Seq": "b"}, content=b"1").status_code == 204
    )
    assert (
        http.post(stream_url, headers={**TEXT, "Stream-Seq": "a"}, content=b"2").status_code == 409
    )
    assert (
        http.post(stream_url, headers={**TEXT, "Stream-Seq": "B"}, content=b"2").status_code == 409
    )
    assert (
        http.post(stream_url, headers={**TEXT, "Stream-Seq": "c"}, content=b"3").status_code == 204
    )
    assert http.get(stream_url).content == b"13"


# --- GET (catch-up) ---------------------------------------------------------------------------


def test_get_returns_data_with_offset_up_to_date_etag_and_cache_headers(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"hello")
    response = http.get(stream_url, params={"offset": "-1"})
    assert response.status_code == 200
    assert response.content == b"hello"
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["Stream-Next-Offset"] == off(5)
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert response.headers["ETag"]
    assert response.headers["Cache-Control"] == "public, max-age=60, stale-while-revalidate=300"
    assert response.headers["Content-Length"] == "5"
    assert "Stream-Closed" not in response.headers
    assert_security_headers(response)


def test_get_without_offset_reads_from_the_beginning(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    assert http.get(stream_url).content == b"abc"


def test_get_from_a_returned_offset_resumes_exactly_there(http, stream_url):
    first = http.put(stream_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    http.post(stream_url, headers=TEXT, content=b"def")
    response = http.get(stream_url, params={"offset": first})
    assert response.content == b"def"
    assert response.headers["Stream-Next-Offset"] == off(6)


def test_get_at_the_tail_is_200_empty_up_to_date(http, stream_url):
    tail = http.put(stream_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    response = http.get(stream_url, params={"offset": tail})
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["Stream-Next-Offset"] == tail
    assert response.headers["Stream-Up-To-Date"] == "true"


def test_get_at_the_tail_of_a_closed_stream_signals_eof(http, stream_url):
    http.put(stream_url, headers={**TEXT, "Stream-Closed": "true"}, content=b"abc")
    data = http.get(stream_url)
    assert (data.content, data.headers["Stream-Closed"]) == (b"abc", "true")
    eof = http.get(stream_url, params={"offset": off(3)})
    assert (eof.status_code, eof.content, eof.headers["Stream-Closed"]) == (200, b"", "true")


def test_get_offset_now_is_empty_at_the_tail_and_not_cacheable(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"history")
    response = http.get(stream_url, params={"offset": "now"})
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["Stream-Next-Offset"] == off(7)
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers


def test_get_offset_now_on_json_is_an_empty_array(http, stream_url):
    http.put(stream_url, headers=JSON, content=b"[1,2]")
    response = http.get(stream_url, params={"offset": "now"})
    assert response.content == b"[]"


def test_get_offset_now_on_a_closed_stream_reports_closed(http, stream_url):
    http.put(stream_url, headers={**TEXT, "Stream-Closed": "true"}, content=b"x")
    response = http.get(stream_url, params={"offset": "now"})
    assert response.headers["Stream-Closed"] == "true"
    assert response.headers["Stream-Up-To-Date"] == "true"


def test_get_json_returns_an_array_of_all_messages(http, stream_url):
    http.put(stream_url, headers=JSON, content=b'{"event": "created"}')
    http.post(stream_url, headers=JSON, content=b'[{"event":"updated"}, 3]')
    response = http.get(stream_url)
    assert response.headers["Content-Type"] == "application/json"
    assert response.content == b'[{"event": "created"},{"event":"updated"},3]'


def test_get_binary_round_trips_every_byte(http, stream_url):
    data = bytes(range(256)) * 4
    http.put(stream_url, headers={"Content-Type": "application/octet-stream"}, content=data[:100])
    http.post(stream_url, headers={"Content-Type": "application/octet-stream"}, content=data[100:])
    body, tail, _ = read_all(http, stream_url)
    assert body == data
    assert tail == off(len(data))


def test_large_closed_stream_is_read_in_chunks_with_eof_only_on_the_last(http, stream_url):
    data = bytes(range(256)) * (12 * 1024)  # 3 MB; the server's chunks are 1 MB
    http.put(stream_url, headers={"Content-Type": "application/octet-stream"}, content=data)
    http.post(stream_url, headers={"Stream-Closed": "true"})
    body, tail, responses = read_all(http, stream_url)
    assert body == data and tail == off(len(data))
    assert len(responses) == 3
    for partial in responses[:-1]:
        assert "Stream-Up-To-Date" not in partial.headers
        assert "Stream-Closed" not in partial.headers
    assert responses[-1].headers["Stream-Closed"] == "true"
    assert len({r.headers["ETag"] for r in responses}) == 3


def test_the_shipped_4_mib_max_chunk_size_cuts_catch_up_reads(http, server_factory):
    from durable_streams.conf import DEFAULTS

    shipped = DEFAULTS["MAX_CHUNK_SIZE"]
    assert shipped == 4 * 1024 * 1024
    server = server_factory(DS_TEST_SHIPPED_CHUNK_SIZE="1")
    try:
        url = server.stream_url(unique())
        data = bytes(range(256)) * (9 * 4096)  # 9 MiB
        binary = {"Content-Type": "application/octet-stream"}
        assert http.put(url, headers=binary, content=data).status_code == 201
        body, tail, responses = read_all(http, url)
    finally:
        server.stop()
    assert body == data and tail == off(len(data))
    assert [len(r.content) for r in responses] == [shipped, shipped, len(data) - 2 * shipped]


def test_large_json_stream_is_chunked_at_message_boundaries(http, stream_url):
    messages = [{"i": i, "pad": "x" * 100_000} for i in range(25)]  # ~2.5 MB
    http.put(stream_url, headers=JSON)
    for start in range(0, 25, 5):
        http.post(stream_url, headers=JSON, content=json.dumps(messages[start : start + 5]))
    offset, got, chunks = "-1", [], 0
    for _ in range(100):
        response = http.get(stream_url, params={"offset": offset})
        batch = json.loads(response.content)  # every chunk is a whole JSON array
        assert batch and len(response.content) <= 1024 * 1024 + 2 + len(batch)
        got.extend(batch)
        chunks += 1
        offset = response.headers["Stream-Next-Offset"]
        assert offset == off(len(got))
        if response.headers.get("Stream-Up-To-Date") == "true":
            break
    assert got == messages
    assert chunks >= 3


def test_get_of_a_missing_stream_is_404(http, stream_url):
    response = http.get(stream_url)
    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"
    assert_security_headers(response)


# --- HEAD and DELETE --------------------------------------------------------------------------


def test_head_reports_metadata_without_a_body(http, stream_url):
    http.put(stream_url, headers={**TEXT, "Stream-TTL": "300"}, content=b"abcd")
    response = http.head(stream_url)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["Stream-Next-Offset"] == off(4)
    assert response.headers["Stream-TTL"] == "300"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Stream-Closed" not in response.headers


def test_head_reports_closure(http, stream_url):
    http.put(stream_url, headers=TEXT)
    http.post(stream_url, headers={"Stream-Closed": "true"})
    assert http.head(stream_url).headers["Stream-Closed"] == "true"


def test_head_of_a_missing_stream_is_404(http, stream_url):
    assert http.head(stream_url).status_code == 404


def test_delete_is_204_then_the_stream_is_gone(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"x")
    response = http.delete(stream_url)
    assert response.status_code == 204
    assert_security_headers(response)
    assert http.get(stream_url).status_code == 404
    assert http.head(stream_url).status_code == 404
    assert http.post(stream_url, headers=TEXT, content=b"x").status_code == 404
    assert http.delete(stream_url).status_code == 404


def test_delete_then_put_makes_a_new_empty_stream(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"old")
    http.delete(stream_url)
    response = http.put(stream_url, headers=JSON)
    assert (response.status_code, response.headers["Stream-Next-Offset"]) == (201, off(0))
    assert http.get(stream_url).content == b"[]"


# --- method handling, CORS --------------------------------------------------------------------


def test_unsupported_method_is_405_with_allow(http, stream_url):
    response = http.request("PATCH", stream_url)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert_security_headers(response)


def test_cors_preflight_is_answered_for_any_stream_url(http, stream_url):
    response = http.options(
        stream_url,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, producer-id, stream-seq",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "HEAD", "POST", "PUT", "DELETE"} <= methods
    assert (
        response.headers["Access-Control-Allow-Headers"] == "content-type, producer-id, stream-seq"
    )
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_cors_headers_expose_the_protocol_headers(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"x")
    response = http.get(stream_url, headers={"Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed = {
        h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {
        "stream-next-offset",
        "stream-cursor",
        "stream-up-to-date",
        "stream-closed",
        "etag",
        "producer-epoch",
        "producer-seq",
        "producer-expected-seq",
        "producer-received-seq",
    } <= exposed


def test_error_responses_carry_cors_and_security_headers(http, stream_url):
    response = http.post(stream_url, headers={**TEXT, "Origin": "https://x.example"}, content=b"x")
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert_security_headers(response)
