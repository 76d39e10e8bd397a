"""DRF integration over real HTTP: a project's DRF authentication and
permission classes guard streams per path prefix (``tests.policies.RoomsDRFPolicy``:
``rooms/`` members via HTTP Basic and never deleted, ``feeds/`` read by anyone,
everything else staff via session with CSRF)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ..admin_session import login
from ..support import unique

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = {"Content-Type": "text/plain"}
SECRET = b"members-only-9c1d"
APPS = {
    "lean": "example_project.asgi:application",
    "django": "example_project.asgi:django_application",
}


@pytest.fixture(scope="module", params=sorted(APPS))
def app(request, server_factory):
    server = server_factory(APPS[request.param], DS_TEST_POLICY="tests.policies.RoomsDRFPolicy")
    yield request.param, server.url
    server.stop()


@pytest.fixture
def member(django_user_model):
    django_user_model.objects.create_user("ada", password="lovelace")
    return httpx.BasicAuth("ada", "lovelace")


def test_rooms_need_basic_auth_and_answer_401_with_drf_challenge(http, app, member):
    _, server_url = app
    url = f"{server_url}/v1/stream/rooms/{unique()}"
    anonymous = http.put(url, headers=TEXT, content=SECRET)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="api"'
    wrong = http.put(url, headers=TEXT, content=SECRET, auth=httpx.BasicAuth("ada", "nope"))
    assert wrong.status_code == 401
    assert "Invalid username/password" in wrong.text
    assert http.head(url, auth=member).status_code == 404  # nothing was created

    assert http.put(url, headers=TEXT, content=SECRET, auth=member).status_code == 201
    read = http.get(url, params={"offset": "-1"}, auth=member)
    assert read.content == SECRET
    assert read.headers["Cache-Control"].startswith("private")
    denied = http.get(url, params={"offset": "-1", "live": "sse"})
    assert denied.status_code == 401
    assert SECRET not in denied.content


def test_a_permission_class_can_decide_per_operation(http, app, member):
    _, server_url = app
    url = f"{server_url}/v1/stream/rooms/{unique()}"
    http.put(url, headers=TEXT, content=SECRET, auth=member)
    response = http.delete(url, auth=member)
    assert response.status_code == 403
    assert response.text == "streams here are never deleted\n"
    assert http.get(url, params={"offset": "-1"}, auth=member).content == SECRET


def test_read_only_for_anonymous_and_public_caching_where_the_rule_says_so(http, app, member):
    _, server_url = app
    url = f"{server_url}/v1/stream/feeds/{unique()}"
    assert http.put(url, headers=TEXT, auth=member).status_code == 201
    assert http.post(url, headers=TEXT, content=b"news").status_code == 401
    assert http.post(url, headers=TEXT, content=b"news", auth=member).status_code == 204
    read = http.get(url, params={"offset": "-1"})
    assert read.status_code == 200
    assert read.content == b"news"
    assert read.headers["Cache-Control"].startswith("public")


def test_paths_no_rule_names_fall_to_the_catch_all_rule(http, app, member):
    _, server_url = app
    url = f"{server_url}/v1/stream/other/{unique()}"
    # Session authentication names no scheme: DRF answers 403, not 401.
    response = http.put(url, headers=TEXT, auth=member)
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers


@pytest.fixture(scope="module")
def django_app(server_factory) -> Iterator[str]:
    """Sessions need Django's middleware: only the URLconf entry point has it."""
    server = server_factory(APPS["django"], DS_TEST_POLICY="tests.policies.RoomsDRFPolicy")
    yield server.url
    server.stop()


def test_session_authentication_with_csrf_through_the_django_entry_point(
    django_app, django_user_model
):
    server_url = django_app
    django_user_model.objects.create_user("root", password="pw", is_staff=True)
    url = f"{server_url}/v1/stream/other/{unique()}"
    with httpx.Client(timeout=20) as browser:
        login(browser, server_url, "root", "pw")
        # DRF's SessionAuthentication enforces CSRF on unsafe methods.
        no_token = browser.put(url, headers=TEXT)
        assert no_token.status_code == 403
        assert "CSRF" in no_token.text
        csrf = browser.cookies["csrftoken"]
        created = browser.put(url, headers={**TEXT, "X-CSRFToken": csrf, "Referer": server_url})
        assert created.status_code == 201


def test_a_signed_in_session_appends_a_body_with_the_csrf_header(django_app, django_user_model):
    # The CSRF check reads request.POST: it must not make DRF parse (and 415) the body.
    server_url = django_app
    django_user_model.objects.create_user("grace", password="pw", is_staff=True)
    url = f"{server_url}/v1/stream/other/{unique()}"
    with httpx.Client(timeout=20) as browser:
        login(browser, server_url, "grace", "pw")
        csrf = {"X-CSRFToken": browser.cookies["csrftoken"], "Referer": server_url}
        assert browser.put(url, headers={**TEXT, **csrf}, content=b"a").status_code == 201
        appended = browser.post(url, headers={**TEXT, **csrf}, content=b"b")
        assert appended.status_code == 204, appended.text
        no_token = browser.post(url, headers=TEXT, content=b"c")
        assert no_token.status_code == 403
        assert "CSRF" in no_token.text
        assert browser.get(url, params={"offset": "-1"}).content == b"ab"
