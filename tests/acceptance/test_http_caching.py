"""ETags, 304 and Cache-Control (spec 10.1) over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from durable_streams import offsets

from ..support import await_waiting_readers, unique

# Only the servers and child processes write, so every read sees committed data;
# the marker sets up the test database (see tests/conftest.py). No flush needed.
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}
PUBLIC = "public, max-age=60, stale-while-revalidate=300"


def test_repeated_catch_up_reads_return_the_same_etag(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    first = http.get(stream_url).headers["ETag"]
    assert http.get(stream_url).headers["ETag"] == first
    assert first.startswith('"') and first.endswith('"')


def test_matching_if_none_match_is_304_without_a_body(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    etag = http.get(stream_url).headers["ETag"]
    response = http.get(stream_url, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Stream-Next-Offset"] == offsets.encode(3)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("form", ["W/{etag}", '"nope", {etag}', '{etag} , "x"'])
def test_weak_and_listed_etags_match_too(http, stream_url, form):
    http.put(stream_url, headers=TEXT, content=b"abc")
    etag = http.get(stream_url).headers["ETag"]
    response = http.get(stream_url, headers={"If-None-Match": form.format(etag=etag)})
    assert response.status_code == 304


def test_non_matching_if_none_match_returns_the_data(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    response = http.get(stream_url, headers={"If-None-Match": '"something-else"'})
    assert (response.status_code, response.content) == (200, b"abc")


def test_etag_differs_per_range_and_changes_when_the_tail_moves(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    whole = http.get(stream_url).headers["ETag"]
    suffix = http.get(stream_url, params={"offset": offsets.encode(1)}).headers["ETag"]
    assert whole != suffix
    http.post(stream_url, headers=TEXT, content=b"d")
    response = http.get(stream_url, headers={"If-None-Match": whole})
    assert (response.status_code, response.content) == (200, b"abcd")
    assert response.headers["ETag"] != whole


def test_etag_changes_when_the_stream_is_closed_without_new_data(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    open_etag = http.get(stream_url).headers["ETag"]
    http.post(stream_url, headers={"Stream-Closed": "true"})
    response = http.get(stream_url, headers={"If-None-Match": open_etag})
    assert response.status_code == 200  # a 304 would hide the closure
    assert response.headers["Stream-Closed"] == "true"
    closed_etag = response.headers["ETag"]
    assert closed_etag != open_etag
    assert http.get(stream_url, headers={"If-None-Match": closed_etag}).status_code == 304


def test_etag_of_the_empty_tail_read_changes_on_close(http, stream_url):
    tail = http.put(stream_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    empty_etag = http.get(stream_url, params={"offset": tail}).headers["ETag"]
    http.post(stream_url, headers={"Stream-Closed": "true"})
    response = http.get(stream_url, params={"offset": tail}, headers={"If-None-Match": empty_etag})
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["Stream-Closed"] == "true"


def test_etags_of_two_streams_with_equal_ranges_differ(http, server):
    urls = [f"{server}/v1/stream/{unique()}" for _ in range(2)]
    for url in urls:
        http.put(url, headers=TEXT, content=b"same")
    assert http.get(urls[0]).headers["ETag"] != http.get(urls[1]).headers["ETag"]


def test_cache_control_per_response_kind(http, stream_url):
    tail = http.put(stream_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    assert http.get(stream_url).headers["Cache-Control"] == PUBLIC
    assert http.get(stream_url, params={"offset": tail}).headers["Cache-Control"] == PUBLIC
    assert http.get(stream_url, params={"offset": "now"}).headers["Cache-Control"] == "no-store"
    assert http.head(stream_url).headers["Cache-Control"] == "no-store"
    assert http.get(stream_url, params={"offset": "bad"}).headers["Cache-Control"] == "no-store"
    assert http.post(stream_url, headers=TEXT, content=b"d").headers["Cache-Control"] == "no-store"


def _long_poll(url: str, offset: str, **params) -> httpx.Response:
    return httpx.get(url, params={"offset": offset, "live": "long-poll", **params}, timeout=60)


def test_offset_now_long_poll_data_is_not_cacheable(http, patient_server):
    # "Future data only": a cached copy would hand a later reader old data (spec 8).
    url = patient_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"history")
    with ThreadPoolExecutor(1) as pool:
        await_waiting_readers(patient_server.url, 0)
        waiting = pool.submit(_long_poll, url, "now")
        await_waiting_readers(patient_server.url, 1)
        http.post(url, headers=TEXT, content=b"new")
        response = waiting.result(timeout=60)
    assert (response.status_code, response.content) == (200, b"new")
    assert response.headers["Cache-Control"] == "no-store"
    # The same data read at its offset stays cacheable.
    at_offset = _long_poll(url, offsets.encode(7))
    assert (at_offset.status_code, at_offset.headers["Cache-Control"]) == (200, PUBLIC)


def test_the_end_of_a_closed_stream_is_a_cacheable_long_poll_answer(http, patient_server):
    # Final: every reader waiting at the tail can share one cached answer.
    url = patient_server.stream_url(unique())
    http.put(url, headers={**TEXT, "Stream-Closed": "true"}, content=b"abc")
    response = _long_poll(url, offsets.encode(3))
    assert response.status_code == 204
    assert response.headers["Stream-Closed"] == "true"
    assert response.headers["Cache-Control"] == PUBLIC
    # offset=now is never kept, closed or not.
    assert _long_poll(url, "now").headers["Cache-Control"] == "no-store"


def test_a_long_poll_timeout_is_not_cacheable(http, stream_url):
    tail = http.put(stream_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    response = _long_poll(stream_url, tail)
    assert (response.status_code, response.headers["Cache-Control"]) == (204, "no-store")


def test_responses_without_a_body_carry_no_content_length(http, ds_server):
    # RFC 9110: a 204 must not send Content-Length; a 304 has no body either.
    # The lean app only: behind the URLconf, Django's CommonMiddleware adds
    # Content-Length to every response it sees, which the view cannot undo.
    url = ds_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"abc")
    read = http.get(url)
    assert read.headers["Content-Length"] == "3"  # bodies keep theirs
    etag = read.headers["ETag"]
    answers = {
        "not modified": http.get(url, headers={"If-None-Match": etag}),
        "append": http.post(url, headers=TEXT, content=b"d"),
        "close": http.post(url, headers={"Stream-Closed": "true"}),
        "eof": _long_poll(url, offsets.encode(4)),
        "preflight": http.options(url, headers={"Access-Control-Request-Method": "POST"}),
        "delete": http.delete(url),
    }
    assert {name: r.status_code for name, r in answers.items()} == {
        "not modified": 304,
        "append": 204,
        "close": 204,
        "eof": 204,
        "preflight": 204,
        "delete": 204,
    }
    for name, response in answers.items():
        assert "Content-Length" not in response.headers, name
