"""Settings that change what the server says over HTTP: restricted CORS
origins, a custom CACHE_CONTROL, and NOTIFY_CHANNEL keeping two apps that
share a database from waking each other's readers."""

from __future__ import annotations

import select
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from ..support import ServerProcess, await_waiting_readers, unique

# Only the servers write; the marker sets up the test database (tests/conftest.py).
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}
ALLOWED = "https://app.example"


@pytest.fixture(scope="module")
def restricted_server(server_factory) -> Iterator[ServerProcess]:
    server = server_factory(
        DS_TEST_CORS_ALLOWED_ORIGINS=f"{ALLOWED},https://other.example",
        DS_TEST_CACHE_CONTROL="public, max-age=5",
    )
    yield server
    server.stop()


def test_an_allowed_origin_is_echoed_with_vary_origin(http, restricted_server):
    url = restricted_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"abc")
    for request in (
        lambda h: http.get(url, params={"offset": "-1"}, headers=h),
        lambda h: http.head(url, headers=h),
        lambda h: http.options(url, headers={**h, "Access-Control-Request-Method": "POST"}),
    ):
        response = request({"Origin": ALLOWED})
        assert response.status_code in (200, 204)
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "Origin" in response.headers["Vary"]
        assert "Stream-Next-Offset" in response.headers["Access-Control-Expose-Headers"]


def test_other_origins_get_no_cors_headers_but_the_same_answer(http, restricted_server):
    url = restricted_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"abc")
    for origin in ("https://evil.example", "https://app.example.evil", None):
        headers = {"Origin": origin} if origin else {}
        response = http.get(url, params={"offset": "-1"}, headers=headers)
        assert (response.status_code, response.content) == (200, b"abc")
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Expose-Headers" not in response.headers


def test_vary_origin_does_not_depend_on_the_request_origin(http, restricted_server):
    # A cache keeps the first copy it sees: if a request without an allowed
    # origin got no Vary, its copy (no CORS headers) would serve allowed browsers.
    url = restricted_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"abc")
    for origin in (ALLOWED, "https://evil.example", None):
        headers = {"Origin": origin} if origin else {}
        for response in (
            http.get(url, params={"offset": "-1"}, headers=headers),
            http.head(url, headers=headers),
            http.get(url, params={"offset": "bad"}, headers=headers),
        ):
            assert response.headers["Vary"] == "Origin", (origin, response.status_code)


def test_a_custom_cache_control_is_sent_on_catch_up_and_long_poll_reads(http, restricted_server):
    url = restricted_server.stream_url(unique())
    tail = http.put(url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    catch_up = http.get(url, params={"offset": "-1"})
    assert catch_up.headers["Cache-Control"] == "public, max-age=5"
    etag = catch_up.headers["ETag"]
    not_modified = http.get(url, params={"offset": "-1"}, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.headers["Cache-Control"] == "public, max-age=5"
    http.post(url, headers=TEXT, content=b"d")
    poll = http.get(url, params={"offset": tail, "live": "long-poll"})
    assert (poll.status_code, poll.content) == (200, b"d")
    assert poll.headers["Cache-Control"] == "public, max-age=5"
    # Answers that must never be cached keep their own value.
    assert http.get(url, params={"offset": "now"}).headers["Cache-Control"] == "no-store"


# --- NOTIFY_CHANNEL ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel_servers(server_factory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two apps on the one test database, each on its own notification channel,
    with long-polls that last 5 s."""
    apps = tuple(
        server_factory(DS_TEST_NOTIFY_CHANNEL=channel, DS_TEST_LONG_POLL_TIMEOUT="5")
        for channel in ("ds_app_one", "ds_app_two")
    )
    yield apps
    for server in apps:
        server.stop()


def notifications(database_url: str, channels: list[str], action) -> dict[str, list[str]]:
    """Payloads each channel carries while ``action()`` runs (read until quiet)."""
    got: dict[str, list[str]] = {channel: [] for channel in channels}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for channel in channels:
            conn.execute(f'LISTEN "{channel}"')
        action()
        # Notifications are sent at commit, before the append is acknowledged.
        while select.select([conn.fileno()], [], [], 1.0)[0]:
            conn.execute("SELECT 1")
            for note in conn.notifies(timeout=0.1):
                got[note.channel].append(note.payload)
    return got


def test_each_app_notifies_only_its_own_channel(http, channel_servers, test_database_url):
    one, _ = channel_servers
    path = unique()
    http.put(one.stream_url(path), headers=TEXT)
    got = notifications(
        test_database_url,
        ["ds_app_one", "ds_app_two", "durable_streams"],
        lambda: http.post(one.stream_url(path), headers=TEXT, content=b"x"),
    )
    assert len(got["ds_app_one"]) == 1 and got["ds_app_one"][0].isdigit()
    assert got["ds_app_two"] == got["durable_streams"] == []


def test_an_append_through_one_app_does_not_wake_the_other_app_s_readers(http, channel_servers):
    one, two = channel_servers
    path = unique()
    tail = http.put(one.stream_url(path), headers=TEXT).headers["Stream-Next-Offset"]
    await_waiting_readers(one.url, 0)
    await_waiting_readers(two.url, 0)
    with ThreadPoolExecutor(2) as pool:
        readers = [
            pool.submit(
                httpx.get,
                server.stream_url(path),
                params={"offset": tail, "live": "long-poll"},
                timeout=30,
            )
            for server in (one, two)
        ]
        await_waiting_readers(one.url, 1)
        await_waiting_readers(two.url, 1)
        assert http.post(one.stream_url(path), headers=TEXT, content=b"x").status_code == 204
        woken, other = (reader.result(timeout=30) for reader in readers)
    # The same app's reader is woken with the data; the other app's hears
    # nothing on its channel and times out (a reader is only woken, never
    # re-polled, while its listener is up).
    assert (woken.status_code, woken.content) == (200, b"x")
    assert other.status_code == 204
    assert other.headers["Stream-Next-Offset"] == tail


@pytest.fixture(scope="module")
def credentialed_server(server_factory) -> Iterator[ServerProcess]:
    server = server_factory(
        DS_TEST_CORS_ALLOWED_ORIGINS=f"*,{ALLOWED}", DS_TEST_CORS_ALLOW_CREDENTIALS="1"
    )
    yield server
    server.stop()


def test_credentialed_cors_only_for_origins_named_explicitly(http, credentialed_server):
    url = credentialed_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"abc")
    preflight = {"Access-Control-Request-Method": "POST"}
    for request in (
        lambda h: http.get(url, params={"offset": "-1"}, headers=h),
        lambda h: http.options(url, headers={**h, **preflight}),
    ):
        named = request({"Origin": ALLOWED})
        assert named.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert named.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in named.headers["Vary"]
        # "*" lets any origin read, never with cookies.
        anyone = request({"Origin": "https://elsewhere.example"})
        assert anyone.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in anyone.headers


def test_no_credentials_unless_the_setting_allows_them(http, restricted_server):
    url = restricted_server.stream_url(unique())
    http.put(url, headers=TEXT, content=b"abc")
    response = http.get(url, params={"offset": "-1"}, headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Access-Control-Allow-Credentials" not in response.headers
