"""A browser app signed in with Django sessions creates, appends and reads
live, in a real browser (Debian's Chromium under Playwright), through
``DRF_RULES`` with ``SessionAuthentication``: sign in, take the CSRF token
from its cookie, ``fetch`` with ``X-CSRFToken``, follow with ``EventSource``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..support import unique
from .test_admin_browser import chromium

pytestmark = pytest.mark.django_db(transaction=True)

BROWSER_APP = """
async ([url]) => {
  const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
  const write = (method, body) => fetch(url, {
    method, body, credentials: "same-origin",
    headers: {"Content-Type": "text/plain", "X-CSRFToken": csrf},
  }).then(async (r) => [r.status, await r.text()]);
  const created = await write("PUT", "hello ");
  const seen = [];
  const live = new Promise((resolve) => {
    const source = new EventSource(url + "?offset=-1&live=sse", {withCredentials: true});
    source.addEventListener("data", (event) => {
      seen.push(event.data);
      if (seen.join("").includes("world")) { source.close(); resolve(seen.join("")); }
    });
  });
  const appended = await write("POST", "world");
  const unsigned = await fetch(url, {method: "POST", body: "x",
    headers: {"Content-Type": "text/plain"}}).then((r) => r.status);
  return {created, appended, unsigned, live: await live};
}
"""


@pytest.fixture(scope="module")
def session_server(server_factory) -> Iterator[str]:
    server = server_factory(
        "example_project.asgi:django_application", DS_TEST_POLICY="tests.policies.RoomsDRFPolicy"
    )
    yield server.url
    server.stop()


def test_a_browser_signed_in_with_a_session_creates_appends_and_reads_live(
    session_server, django_user_model
):
    django_user_model.objects.create_user("ada", password="ada-pw", is_staff=True)
    url = f"{session_server}/v1/stream/other/{unique('browser')}"
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{session_server}/admin/login/?next=/admin/")
        page.fill("#id_username", "ada")
        page.fill("#id_password", "ada-pw")
        page.click("input[type=submit]")
        page.wait_for_url(f"{session_server}/admin/")
        result = page.evaluate(BROWSER_APP, [url])
    assert result["created"][0] == 201, result
    assert result["appended"][0] == 204, result
    assert result["unsigned"] == 403  # no CSRF token: refused, as DRF does
    assert result["live"] == "hello world"
