"""The durable proxy protocol over HTTP (PROXY_PROTOCOL.md), against daphne and
a slow SSE upstream on loopback (tests/upstream.py)."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import override_settings

from tests.ai_settings import PROXY_TEST_SECRET
from tests.support import SSE
from tests.upstream import Upstream

pytestmark = pytest.mark.django_db

AUTH = {"Authorization": f"Bearer {PROXY_TEST_SECRET}"}


@pytest.fixture(scope="module")
def upstream():
    server = Upstream().start()
    yield server
    server.stop()


def _proxy_server(server_factory, upstream, **env):
    env.setdefault("DS_TEST_PROXY_UPSTREAMS", f"{upstream.url}/")
    return server_factory(DJANGO_SETTINGS_MODULE="tests.ai_settings", **env)


@pytest.fixture(scope="module")
def proxy(server_factory, upstream):
    """Base URL of the proxy on a daphne serving the lean entry point."""
    return _proxy_server(server_factory, upstream).url + "/v1/proxy/"


@pytest.fixture(scope="module")
def impatient_proxy(server_factory, upstream):
    """A proxy with 1-second header and body-inactivity timeouts."""
    server = _proxy_server(
        server_factory,
        upstream,
        DS_TEST_PROXY_HEADER_TIMEOUT="1",
        DS_TEST_PROXY_IDLE_TIMEOUT="1",
    )
    return server.url + "/v1/proxy/"


def create(http, proxy, path, method="GET", headers=None, **kwargs):
    all_headers = {**AUTH, "Upstream-Method": method}
    if path is not None:
        all_headers["Upstream-URL"] = path
    all_headers.update(headers or {})
    return http.post(proxy, headers=all_headers, **kwargs)


def read_to_end(http, location, deadline=30.0, offset="-1"):
    """Long-poll the capability URL until the stream closes; the body and the last response."""
    body = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        r = http.get(at(location, offset=offset, live="long-poll"))
        assert r.status_code in (200, 204), (r.status_code, r.text)
        body += r.content
        offset = r.headers["Stream-Next-Offset"]
        if r.headers.get("Stream-Closed") == "true":
            return body, r
    raise AssertionError(f"stream did not close; got {body!r}")


def at(location: str, **params: str) -> str:
    """The capability URL with more query parameters (httpx's params= would replace its own)."""
    return location + "&" + urlencode(params)


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_create_answers_201_before_the_upstream_body_ends_and_persists_it_all(
    http, proxy, upstream
):
    r = create(http, proxy, f"{upstream.url}/sse?n=20&interval=0.1")
    assert r.status_code == 201, r.text
    assert r.content == b""
    assert r.headers["Upstream-Content-Type"] == "text/event-stream"
    location = r.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert set(query) == {"expires", "signature"}
    # The upstream needs ~2 s for its body; the 201 came with its headers.
    first = http.get(at(location, offset="-1"))
    assert first.status_code == 200
    assert first.headers.get("Stream-Closed") != "true"
    assert first.headers["Upstream-Content-Type"] == "text/event-stream"
    body, last = read_to_end(http, location)
    assert body == b"".join(f"data: {i}\n\n".encode() for i in range(20))
    assert last.headers["Proxy-Outcome"] == "completed"


def test_sse_read_of_a_proxy_stream_follows_it_live_to_the_end(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/sse?n=10&interval=0.1")
    location = r.headers["Location"]
    data = ""
    with http.stream("GET", at(location, offset="-1", live="sse")) as response:
        assert response.status_code == 200
        assert response.headers["Upstream-Content-Type"] == "text/event-stream"
        for event, payload in SSE(response, time.monotonic() + 30).events():
            if event == "data":
                data += payload
            elif event == "control" and json.loads(payload).get("streamClosed"):
                break
    assert data == "".join(f"data: {i}\n\n" for i in range(10))


def test_reader_that_drops_mid_generation_resumes_from_its_offset_and_loses_nothing(
    http, proxy, upstream
):
    r = create(http, proxy, f"{upstream.url}/sse?n=30&interval=0.05")
    location = r.headers["Location"]
    first = http.get(at(location, offset="-1"))
    got, offset = first.content, first.headers["Stream-Next-Offset"]
    # The reader is gone while the generation goes on without it.
    time.sleep(1.0)
    body, _ = read_to_end(http, location, offset=offset)
    assert got + body == b"".join(f"data: {i}\n\n".encode() for i in range(30))


def test_upstream_body_that_breaks_leaves_a_closed_stream_that_says_it_failed(
    http, proxy, upstream
):
    r = create(http, proxy, f"{upstream.url}/sse-fail?n=5&interval=0.05")
    assert r.status_code == 201
    body, last = read_to_end(http, r.headers["Location"])
    events = body.decode()
    assert events.startswith("".join(f"data: {i}\n\n" for i in range(5)))
    assert "event: error" in events
    assert '"UPSTREAM_ERROR"' in events
    assert last.headers["Proxy-Outcome"] == "failed"


def test_abort_stops_the_upstream_keeps_what_was_received_and_is_idempotent(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/stall?n=3&interval=0.01&hold=20")
    location = r.headers["Location"]
    time.sleep(0.5)
    aborted = http.patch(location + "&action=abort")
    assert aborted.status_code == 204
    body, last = read_to_end(http, location, deadline=5)
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert last.headers["Proxy-Outcome"] == "aborted"
    assert http.patch(location + "&action=abort").status_code == 204


def test_abort_through_another_server_process_stops_the_pipe_there(
    http, proxy, server_factory, upstream
):
    # Two daphne processes on one database: the PATCH reaches the one that
    # does not run the pipe, which asks the other through the meta stream.
    other = _proxy_server(server_factory, upstream).url + "/v1/proxy/"
    r = create(http, proxy, f"{upstream.url}/stall?n=3&interval=0.01&hold=20")
    location = r.headers["Location"]
    assert location.startswith(proxy)
    time.sleep(0.5)
    aborted = http.patch(other + location[len(proxy) :] + "&action=abort")
    assert aborted.status_code == 204
    body, last = read_to_end(http, location, deadline=5)
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert last.headers["Proxy-Outcome"] == "aborted"


def test_body_inactivity_timeout_ends_piping_and_keeps_the_data(http, impatient_proxy, upstream):
    r = create(http, impatient_proxy, f"{upstream.url}/stall?n=2&interval=0.01&hold=10")
    assert r.status_code == 201
    body, last = read_to_end(http, r.headers["Location"], deadline=8)
    assert body.startswith(b"data: 0\n\ndata: 1\n\n")
    assert b'"UPSTREAM_TIMEOUT"' in body
    assert last.headers["Proxy-Outcome"] == "failed"


def test_header_timeout_is_504_upstream_timeout(http, impatient_proxy, upstream):
    r = create(http, impatient_proxy, f"{upstream.url}/slow-headers?delay=3")
    assert r.status_code == 504
    assert error_code(r) == "UPSTREAM_TIMEOUT"


def test_upstream_error_is_502_with_upstream_status_and_its_body(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/status?code=429")
    assert r.status_code == 502
    assert r.headers["Upstream-Status"] == "429"
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text == "upstream says 429"


def test_large_upstream_error_body_is_truncated(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/status?code=500&size=300000")
    assert r.status_code == 502
    assert r.headers["Upstream-Status"] == "500"
    assert len(r.content) == 64 * 1024


def test_redirects_are_never_followed(http, proxy, upstream):
    before = upstream.connections
    r = create(http, proxy, f"{upstream.url}/redirect")
    assert r.status_code == 400
    assert error_code(r) == "REDIRECT_NOT_ALLOWED"
    assert upstream.connections == before + 1  # /sse was never requested


def test_headers_forwarded_upstream_are_filtered(http, proxy, upstream):
    r = create(
        http,
        proxy,
        f"{upstream.url}/echo",
        method="POST",
        headers={
            "Upstream-Authorization": "Bearer upstream-key",
            "Content-Type": "application/json",
            "X-Custom": "kept",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "TE": "trailers",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "named in Connection",
        },
        content=b'{"prompt":"hi"}',
    )
    assert r.status_code == 201, r.text
    body, _ = read_to_end(http, r.headers["Location"])
    echo = json.loads(body)
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert echo["method"] == "POST"
    assert echo["body"] == '{"prompt":"hi"}'
    assert headers["authorization"] == "Bearer upstream-key"  # not the service secret
    assert headers["x-custom"] == "kept"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{upstream.port}"
    for stripped in ("keep-alive", "proxy-authorization", "te", "x-hop", "upstream-url"):
        assert stripped not in headers, stripped
    for stripped in ("upstream-method", "upstream-authorization"):
        assert stripped not in headers, stripped


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Upstream-URL": None}, 400, "MISSING_UPSTREAM_URL"),
        ({"Upstream-Method": None}, 400, "MISSING_UPSTREAM_METHOD"),
        ({"Upstream-Method": "TRACE"}, 400, "INVALID_UPSTREAM_METHOD"),
        ({"Upstream-URL": "http://example.com/v1/chat"}, 403, "UPSTREAM_NOT_ALLOWED"),
        ({"Upstream-URL": "ftp://127.0.0.1/x"}, 403, "UPSTREAM_NOT_ALLOWED"),
        ({"Authorization": None}, 401, "MISSING_SECRET"),
        ({"Authorization": "Bearer wrong-secret"}, 401, "INVALID_SECRET"),
    ],
)
def test_create_rejects_bad_requests_with_the_specified_code(
    http, proxy, upstream, headers, status, code
):
    sent = {**AUTH, "Upstream-URL": f"{upstream.url}/sse?n=1", "Upstream-Method": "GET"}
    for name, value in headers.items():
        if value is None:
            sent.pop(name)
        else:
            sent[name] = value
    r = http.post(proxy, headers=sent)
    assert r.status_code == status, r.text
    assert error_code(r) == code


def test_dot_segments_cannot_escape_an_allowed_path_prefix(http, server_factory, upstream):
    proxy = (
        _proxy_server(server_factory, upstream, DS_TEST_PROXY_UPSTREAMS=f"{upstream.url}/sse").url
        + "/v1/proxy/"
    )
    assert create(http, proxy, f"{upstream.url}/sse?n=1").status_code == 201
    r = create(http, proxy, f"{upstream.url}/sse/../echo")
    assert r.status_code == 403
    assert error_code(r) == "UPSTREAM_NOT_ALLOWED"


def test_ssrf_rules_refuse_loopback_upstreams_outside_development(http, server_factory, upstream):
    proxy = (
        _proxy_server(server_factory, upstream, DS_TEST_PROXY_ALLOW_LOCALHOST="0").url
        + "/v1/proxy/"
    )
    r = create(http, proxy, f"{upstream.url}/sse?n=1")
    assert r.status_code == 403
    assert error_code(r) == "UPSTREAM_NOT_ALLOWED"


def test_empty_allowlist_refuses_every_upstream(http, server_factory, upstream):
    proxy = _proxy_server(server_factory, upstream, DS_TEST_PROXY_UPSTREAMS="").url
    r = create(http, proxy + "/v1/proxy/", f"{upstream.url}/sse?n=1")
    assert r.status_code == 403
    assert error_code(r) == "UPSTREAM_NOT_ALLOWED"


def _stream_url(location: str) -> tuple[str, str]:
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parts.path.rsplit("/", 1)[1]


def test_capability_urls_are_checked_for_read_and_abort(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/sse?n=2")
    location = r.headers["Location"]
    bare, stream_id = _stream_url(location)
    query = parse_qs(urlsplit(location).query)
    expires, signature = query["expires"][0], query["signature"][0]

    def status_code(response):
        return response.status_code, error_code(response)

    # Unsigned read: service authentication is the fallback, so no secret -> MISSING_SECRET.
    assert status_code(http.get(bare)) == (401, "MISSING_SECRET")
    assert http.get(bare, headers=AUTH).status_code == 200
    assert status_code(http.get(bare, params={"expires": expires})) == (401, "MISSING_SIGNATURE")
    tampered = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    assert status_code(http.get(bare, params={"expires": expires, "signature": tampered})) == (
        401,
        "SIGNATURE_INVALID",
    )
    # Another expiry with this signature is another (unsigned) claim.
    longer = str(int(expires) + 3600)
    assert status_code(http.get(bare, params={"expires": longer, "signature": signature})) == (
        401,
        "SIGNATURE_INVALID",
    )
    # The signature is bound to the stream id.
    other = bare.rsplit("/", 1)[0] + "/" + "0" * 32
    assert status_code(http.get(other, params={"expires": expires, "signature": signature})) == (
        401,
        "SIGNATURE_INVALID",
    )
    # Abort takes a capability URL only, never the service secret.
    assert status_code(http.patch(bare + "?action=abort", headers=AUTH)) == (
        401,
        "MISSING_SIGNATURE",
    )
    assert status_code(http.patch(location + "&action=stop")) == (400, "INVALID_ACTION")
    assert stream_id in location


def test_expired_capability_url_is_401_signature_expired(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/sse?n=1")
    bare, stream_id = _stream_url(r.headers["Location"])
    from durable_streams.proxy import signing

    past = int(time.time()) - 10
    with override_settings(DURABLE_STREAMS={"PROXY_SECRET": PROXY_TEST_SECRET}):
        query = signing.sign(stream_id, past)
    for method in ("GET", "PATCH"):
        response = http.request(method, f"{bare}?{query}&action=abort")
        assert response.status_code == 401
        assert error_code(response) == "SIGNATURE_EXPIRED"


def test_head_and_delete_take_service_authentication_only(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/sse?n=3")
    location = r.headers["Location"]
    bare, _ = _stream_url(location)
    read_to_end(http, location)
    # A capability URL is not enough for metadata or delete.
    assert http.head(location).status_code == 401
    assert http.delete(location).status_code == 401
    head = http.head(bare, headers=AUTH)
    assert head.status_code == 200
    assert head.headers["Upstream-Content-Type"] == "text/event-stream"
    assert head.headers["Stream-Closed"] == "true"
    assert http.delete(bare, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.delete(bare, headers=AUTH).status_code == 204
    gone = http.get(location)
    assert gone.status_code == 404
    assert error_code(gone) == "STREAM_NOT_FOUND"
    assert http.head(bare, headers=AUTH).status_code == 404
    assert http.delete(bare, headers=AUTH).status_code == 204  # idempotent


def test_delete_aborts_an_active_upstream(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/stall?n=1&hold=20")
    bare, _ = _stream_url(r.headers["Location"])
    time.sleep(0.3)
    assert http.delete(bare, headers=AUTH).status_code == 204
    assert http.get(r.headers["Location"]).status_code == 404


def test_unknown_stream_is_404_stream_not_found(http, proxy):
    r = http.get(proxy + "f" * 32, headers=AUTH)
    assert r.status_code == 404
    assert error_code(r) == "STREAM_NOT_FOUND"
    assert http.get(proxy + "not-an-id", headers=AUTH).status_code == 404


def test_cors_preflight_allows_the_proxy_headers(http, proxy):
    r = http.options(proxy, headers={"Origin": "https://app.example"})
    assert r.status_code == 204
    allowed = r.headers["Access-Control-Allow-Headers"]
    for name in ("Upstream-URL", "Upstream-Method", "Upstream-Authorization"):
        assert name in allowed


def test_created_response_exposes_location_to_browsers(http, proxy, upstream):
    r = create(http, proxy, f"{upstream.url}/sse?n=1", headers={"Origin": "https://app.example"})
    exposed = r.headers["Access-Control-Expose-Headers"]
    assert "Location" in exposed and "Upstream-Content-Type" in exposed


def test_proxy_works_through_the_urlconf_entry_point_too(http, server_factory, upstream):
    server = server_factory(
        "example_project.asgi:django_application",
        DJANGO_SETTINGS_MODULE="tests.ai_settings",
        DS_TEST_PROXY_UPSTREAMS=f"{upstream.url}/",
    )
    r = create(http, server.url + "/v1/proxy/", f"{upstream.url}/sse?n=5&interval=0.02")
    assert r.status_code == 201, r.text
    body, _ = read_to_end(http, r.headers["Location"])
    assert body == b"".join(f"data: {i}\n\n".encode() for i in range(5))
