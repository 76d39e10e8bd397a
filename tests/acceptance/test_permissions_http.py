"""Access control over real HTTP: a denied request never changes a stream and
never leaks a byte of it, in every read mode, on both entry points (the lean
ASGI app and Django's URLconf with middleware). Servers run
``tests.policies.TokenPolicy`` (bearer tokens; ``public/`` readable by all)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from ..admin_session import login
from ..support import unique

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = b"secret-payload-7f3a"
ADMIN = {"Authorization": "Bearer admin-token"}
WRITER = {"Authorization": "Bearer writer-token"}
READER = {"Authorization": "Bearer reader-token"}
APPENDER = {"Authorization": "Bearer appender-token"}
FORKER = {"Authorization": "Bearer forker-token"}
BAD = {"Authorization": "Bearer no-such-token"}
TEXT = {"Content-Type": "text/plain"}
APPS = {
    "lean": "example_project.asgi:application",
    "django": "example_project.asgi:django_application",
}


@pytest.fixture(scope="module", params=sorted(APPS))
def base(request, server_factory) -> Iterator[str]:
    server = server_factory(APPS[request.param], DS_TEST_POLICY="tests.policies.TokenPolicy")
    yield server.url + "/v1/stream/"
    server.stop()


def make_stream(http: httpx.Client, base: str, prefix: str = "") -> str:
    url = base + prefix + unique()
    created = http.put(url, headers={**ADMIN, **TEXT}, content=b"head " + SECRET)
    assert created.status_code == 201, created.text
    return url


def observed(http: httpx.Client, url: str) -> tuple:
    """Everything an authorised reader sees of the stream."""
    head = http.head(url, headers=ADMIN)
    if head.status_code != 200:
        return (head.status_code,)
    body = http.get(url, params={"offset": "-1"}, headers=ADMIN)
    return (
        head.status_code,
        head.headers["Stream-Next-Offset"],
        head.headers.get("Stream-Closed"),
        body.content,
    )


def assert_denied_without_data(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert SECRET not in response.content
    assert response.content in (
        b"",
        b"authentication required\n",
        b"forbidden\n",
        b"invalid token\n",
    )
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers.get("Content-Type", "text/plain").startswith("text/plain")
    leaked = [h for h in response.headers if h.lower().startswith("stream-") or h.lower() == "etag"]
    assert leaked == []
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


# --- writes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "status"), [({}, 401), (BAD, 401), (READER, 403), (APPENDER, 403)]
)
def test_denied_create_creates_nothing(http, base, auth, status):
    url = base + unique()
    response = http.put(url, headers={**auth, **TEXT}, content=SECRET)
    assert_denied_without_data(response, status)
    assert observed(http, url) == (404,)


DENIED_WRITES = [
    ("anonymous append", {}, "POST", {}, b"more", 401),
    ("reader append", READER, "POST", {}, b"more", 403),
    ("reader close", READER, "POST", {"Stream-Closed": "true"}, b"", 403),
    ("appender close", APPENDER, "POST", {"Stream-Closed": "true"}, b"", 403),
    ("appender append-and-close", APPENDER, "POST", {"Stream-Closed": "true"}, b"last", 403),
    ("writer delete", WRITER, "DELETE", {}, b"", 403),
    ("bad token delete", BAD, "DELETE", {}, b"", 401),
    ("reader re-create", READER, "PUT", {}, b"", 403),
    (
        "producer append",
        READER,
        "POST",
        {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"},
        b"dup",
        403,
    ),
]


@pytest.mark.parametrize(
    ("auth", "method", "headers", "body", "status"),
    [case[1:] for case in DENIED_WRITES],
    ids=[case[0] for case in DENIED_WRITES],
)
def test_denied_writes_never_change_the_stream(http, base, auth, method, headers, body, status):
    url = make_stream(http, base)
    before = observed(http, url)
    response = http.request(method, url, headers={**auth, **TEXT, **headers}, content=body)
    assert_denied_without_data(response, status)
    assert observed(http, url) == before


def test_a_denied_producer_append_stores_no_producer_state(http, base):
    url = make_stream(http, base)
    producer = {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"}
    denied = http.post(url, headers={**READER, **TEXT, **producer}, content=b"x")
    assert denied.status_code == 403
    # Had the denied request stored seq 0, this would be a duplicate (204).
    accepted = http.post(url, headers={**WRITER, **TEXT, **producer}, content=b"x")
    assert accepted.status_code == 200


def test_allowed_writes_succeed_with_their_token(http, base):
    url = make_stream(http, base)
    assert http.post(url, headers={**APPENDER, **TEXT}, content=b"+a").status_code == 204
    closed = http.post(url, headers={**WRITER, "Stream-Closed": "true"})
    assert closed.status_code == 204
    assert closed.headers["Stream-Closed"] == "true"
    assert http.delete(url, headers=ADMIN).status_code == 204


def test_denied_fork_creates_nothing_and_reveals_nothing(http, base):
    source = make_stream(http, base)
    fork = base + unique("fork")
    source_path = "/v1/stream/" + source.removeprefix(base)
    # The forker may fork, but may not read the source: forking it would expose it.
    response = http.put(fork, headers={**FORKER, "Stream-Forked-From": source_path})
    assert_denied_without_data(response, 403)
    assert observed(http, fork) == (404,)
    allowed = http.put(fork, headers={**ADMIN, "Stream-Forked-From": source_path})
    assert allowed.status_code == 201


def test_a_public_source_may_be_forked_without_read_rights(http, base):
    source = make_stream(http, base, prefix="public/")
    fork = base + unique("fork")
    source_path = "/v1/stream/" + source.removeprefix(base)
    response = http.put(fork, headers={**FORKER, "Stream-Forked-From": source_path})
    assert response.status_code == 201


# --- reads ----------------------------------------------------------------------------------

READ_MODES = {
    "catch-up": ("GET", {"offset": "-1"}),
    "catch-up now": ("GET", {"offset": "now"}),
    "long-poll": ("GET", {"offset": "-1", "live": "long-poll"}),
    "long-poll at tail": ("GET", {"offset": "now", "live": "long-poll"}),
    "sse": ("GET", {"offset": "-1", "live": "sse"}),
    "head": ("HEAD", {}),
}


@pytest.mark.parametrize("mode", sorted(READ_MODES))
@pytest.mark.parametrize(("auth", "status"), [({}, 401), (BAD, 401), (FORKER, 403)])
def test_denied_reads_leak_nothing_in_any_mode(http, base, mode, auth, status):
    url = make_stream(http, base)
    method, params = READ_MODES[mode]
    with http.stream(method, url, params=params, headers=auth) as response:
        response.read()  # a denial is a complete, short response, never a stream
        assert_denied_without_data(response, status)
        assert "text/event-stream" not in response.headers.get("Content-Type", "")


@pytest.mark.parametrize("mode", sorted(READ_MODES))
def test_a_denied_read_of_a_missing_stream_looks_the_same(http, base, mode):
    existing = make_stream(http, base)
    missing = base + unique("missing")
    method, params = READ_MODES[mode]
    answers = [http.request(method, url, params=params) for url in (existing, missing)]
    assert [(r.status_code, r.content) for r in answers] == [(401, answers[0].content)] * 2


def test_allowed_reads_of_private_streams_are_cache_control_private(http, base):
    url = make_stream(http, base)
    catch_up = http.get(url, params={"offset": "-1"}, headers=READER)
    assert catch_up.status_code == 200
    assert catch_up.content == b"head " + SECRET
    assert catch_up.headers["Cache-Control"].startswith("private, max-age=")
    tail = catch_up.headers["Stream-Next-Offset"]
    http.post(url, headers={**WRITER, **TEXT}, content=b"+more")
    poll = http.get(url, params={"offset": tail, "live": "long-poll"}, headers=READER)
    assert poll.status_code == 200
    assert poll.headers["Cache-Control"].startswith("private, ")
    with http.stream("GET", url, params={"offset": "-1", "live": "sse"}, headers=READER) as sse:
        assert sse.status_code == 200
        assert sse.headers["Cache-Control"] == "private, no-cache"


def test_public_streams_stay_publicly_cacheable_and_readable_by_anyone(http, base):
    url = make_stream(http, base, prefix="public/")
    response = http.get(url, params={"offset": "-1"})
    assert response.status_code == 200
    assert re.match(r"public, max-age=\d+", response.headers["Cache-Control"])


def test_cors_preflight_needs_no_credentials(http, base):
    response = http.options(
        base + unique(),
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"},
    )
    assert response.status_code == 204
    assert "PUT" in response.headers["Access-Control-Allow-Methods"]


# --- the admin's live tail: staff sessions may read (ADMIN_READS) ---------------------------


def make_user(django_user_model, *, staff: bool, superuser: bool = False, grant: bool = False):
    """A user with exactly the given flags and, if ``grant``, the view_stream permission."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(
        unique("ops"), password="pw", is_staff=staff, is_superuser=superuser
    )
    if grant:
        view = Permission.objects.get(
            content_type__app_label="durable_streams", codename="view_stream"
        )
        user.user_permissions.add(view)
    return user


def session_read(server_url: str, user, url: str) -> tuple[httpx.Response, int]:
    """A logged-in session's catch-up read of ``url``, and the status of its write."""
    with httpx.Client(timeout=20) as browser:
        if user.is_staff:
            login(browser, server_url, user.username, "pw")
        else:
            # The admin's login form turns non-staff users away: log in directly.
            from django.test import Client

            session = Client()
            session.force_login(user)
            browser.cookies.set("sessionid", session.cookies["sessionid"].value)
        assert "sessionid" in browser.cookies
        response = browser.get(url, params={"offset": "-1"})
        response.read()
        write = browser.post(url, headers=TEXT, content=b"x").status_code
    return response, write


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        ({"staff": True, "grant": True}, 200),  # an ordinary staff user granted view_stream
        ({"staff": True, "superuser": True}, 200),  # superusers hold every permission
        ({"staff": True}, 401),  # staff without view_stream
        ({"staff": False, "grant": True}, 401),  # view_stream without staff
    ],
    ids=["staff-with-view_stream", "superuser", "staff-without-view", "grant-without-staff"],
)
def test_staff_sessions_with_view_stream_read_any_stream_other_sessions_do_not(
    http, base, django_user_model, flags, status
):
    url = make_stream(http, base)
    server_url = base.removesuffix("/v1/stream/")
    user = make_user(django_user_model, **flags)
    response, write = session_read(server_url, user, url)
    assert response.status_code == status
    # Reading is all a session grants: writes still follow the policy.
    assert write == 401
    if status == 200:
        assert response.content == b"head " + SECRET
        assert response.headers["Cache-Control"].startswith("private")
    else:
        assert SECRET not in response.content


@pytest.mark.parametrize("app", sorted(APPS))
def test_with_admin_reads_off_staff_sessions_get_no_read_access(
    http, server_factory, django_user_model, app
):
    server = server_factory(
        APPS[app], DS_TEST_POLICY="tests.policies.TokenPolicy", DS_TEST_ADMIN_READS="0"
    )
    try:
        url = make_stream(http, server.url + "/v1/stream/")
        user = make_user(django_user_model, staff=True, superuser=True)
        response, write = session_read(server.url, user, url)
    finally:
        server.stop()
    assert (response.status_code, write) == (401, 401)
    assert SECRET not in response.content
