"""Fuzzed requests never answer 5xx and never touch other streams (issue 10).

hypothesis generates methods, stream paths, protocol headers (valid, huge,
malformed), query parameters and bodies and sends them to a real server;
every answer must be below 500, and control streams created beforehand must
be byte-identical afterwards, their metadata included. The suite sends 1,500
requests (every example is one request, counted and checked);
``DS_FUZZ_REQUESTS=10000`` sends more.
"""

from __future__ import annotations

import os
import string
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_streams import offsets

from ..support import unique

pytestmark = pytest.mark.django_db

REQUESTS = int(os.environ.get("DS_FUZZ_REQUESTS", "1500"))
HEADER_TEXT = st.text(
    # Without NEL (0x85): daphne refuses it in any header before the
    # application runs, and twisted drops the connection, answering nothing,
    # for a POST whose Content-Type holds it (email's header parser).
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f\x85"),
    max_size=40,
)
NUMBERS = st.one_of(
    st.integers(0, 2**64).map(str),
    st.integers(-5, 5).map(str),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.sampled_from(["", " ", "01", "1.5", "1e3", "0x1", "\u0661"]),
    HEADER_TEXT,
)
OFFSETS = st.one_of(
    st.sampled_from(["-1", "now", "", "-2", "NOW"]),
    st.integers(0, 10**6).map(offsets.encode),
    st.integers(0, offsets.MAX_POSITION).map(offsets.encode),
    HEADER_TEXT,
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "text/plain",
            "application/json",
            "application/octet-stream",
            "application/json; charset=utf-8",
            "text/plain; charset=latin-1",
            "",
            "json",
            "a/b/c",
            "x" * 300,
        ]
    ),
    HEADER_TEXT,
)
JSON_BODIES = st.one_of(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=10,
    ).map(lambda v: __import__("json").dumps(v).encode()),
    st.sampled_from([b"[]", b"[", b"{}", b"[1,]", b"NaN", b"[1]x", b"9" * 5000, b"[" * 3000]),
)
BODIES = st.one_of(st.just(b""), st.binary(max_size=300), JSON_BODIES)
PROTOCOL_HEADERS = {
    "Content-Type": CONTENT_TYPES,
    "Stream-TTL": NUMBERS,
    "Stream-Expires-At": st.one_of(
        st.sampled_from(
            ["2099-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59"]
        ),
        HEADER_TEXT,
    ),
    "Stream-Seq": HEADER_TEXT,
    "Stream-Closed": st.sampled_from(["true", "false", "TRUE", "", "1"]),
    "Stream-Forked-From": st.one_of(st.just("/v1/stream/"), HEADER_TEXT.map("/v1/stream/".__add__)),
    "Stream-Fork-Offset": OFFSETS,
    "Stream-Fork-Sub-Offset": NUMBERS,
    "Producer-Id": st.one_of(st.sampled_from(["p", "q", ""]), HEADER_TEXT),
    "Producer-Epoch": NUMBERS,
    "Producer-Seq": NUMBERS,
    "If-None-Match": HEADER_TEXT,
    "Origin": HEADER_TEXT,
}
NAME_CHARS = string.ascii_letters + string.digits + "-_.~%/:@!$&'()*+,;=é "


def header_bytes(value: str) -> bytes:
    """``value`` as bytes every client can send (httpx refuses non-ASCII str,
    h11 surrounding blanks, which HTTP strips anyway): latin-1 where it
    encodes (bytes past 0x7f, not UTF-8), else UTF-8."""
    value = value.strip(" ")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


@st.composite
def fuzz_requests(draw, controls: list[str]):
    method = draw(
        st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "FOO"])
    )
    if method in ("GET", "HEAD", "OPTIONS") and draw(st.booleans()):
        path = draw(st.sampled_from(controls))  # reading must not change them
    else:
        path = draw(
            st.one_of(
                st.sampled_from(["fz-a", "fz-b", "fz-json", "fz-a/b", "fz-..", "fz-%2e"]),
                st.text(alphabet=NAME_CHARS, min_size=1, max_size=30).map("fz-".__add__),
                st.just("fz-" + "x" * 2000),
            )
        )
    names = draw(st.lists(st.sampled_from(sorted(PROTOCOL_HEADERS)), max_size=5, unique=True))
    headers = {name: header_bytes(draw(PROTOCOL_HEADERS[name])) for name in names}
    query = draw(
        st.dictionaries(
            st.sampled_from(["offset", "live", "cursor", "x"]),
            st.one_of(OFFSETS, st.sampled_from(["long-poll", "sse", "true"]), HEADER_TEXT),
            max_size=3,
        )
    )
    body = draw(BODIES) if method in ("PUT", "POST", "PATCH", "FOO") else b""
    return method, path, headers, query, body


def snapshot(client: httpx.Client, url: str) -> tuple:
    head = client.head(url)
    body = client.get(url, params={"offset": "-1"}).content
    keep = ("Content-Type", "Stream-Next-Offset", "Stream-Closed", "Stream-TTL", "ETag")
    return head.status_code, {k: head.headers.get(k) for k in keep}, body


def test_fuzzed_requests_never_answer_5xx_nor_change_other_streams(server_factory):
    server = server_factory(
        DS_TEST_LONG_POLL_TIMEOUT="0.05",
        DS_TEST_SSE_MAX_DURATION="0.1",
        DS_TEST_MAX_APPEND_SIZE="4096",
    )
    prefix = unique("ctl")
    controls = [f"{prefix}-text", f"{prefix}-json", f"{prefix}-closed"]
    sent: Counter[int] = Counter()  # requests sent, by answer status
    with httpx.Client(base_url=server.url, timeout=30) as client:
        urls = [server.stream_url(c) for c in controls]
        client.put(urls[0], headers={"Content-Type": "text/plain"}, content=b"text\n")
        client.put(urls[1], headers={"Content-Type": "application/json"}, content=b'[{"a":1}]')
        client.put(
            urls[2],
            headers={"Content-Type": "application/json", "Stream-Closed": "true"},
            content=b"[1,2]",
        )
        before = [snapshot(client, url) for url in urls]

        def one(request) -> None:
            method, path, headers, query, body = request
            # Every example is a request httpx can send: none is skipped.
            request = client.build_request(
                method, "/v1/stream/" + path, headers=headers, params=query, content=body
            )
            response = client.send(request)
            sent[response.status_code] += 1
            assert response.status_code < 500, (request.method, request.url, headers, body[:200])

        # hypothesis may end a run before max_examples (when it judges the
        # space explored): run again for the rest until the count is reached.
        for _ in range(5):
            rest = REQUESTS - sent.total()
            if rest == 0:
                break
            options = settings(
                max_examples=rest,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            options(given(fuzz_requests(controls))(one))()
        after = [snapshot(client, url) for url in urls]
    print(f"\n{sent.total()} fuzzed requests: {dict(sorted(sent.items()))}")
    assert sent.total() == REQUESTS
    assert after == before
    assert server.alive()
    assert "Traceback" not in server.log_tail(10**6)
