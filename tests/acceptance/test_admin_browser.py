"""The stream admin in a real browser: headless Chromium (Debian's, never a
downloaded build; ``make test`` installs it) driven by Playwright, against a
daphne server. It logs in, sees a stream's content, and sees appends made by
another client appear in the live tail without a reload, also after the SSE
response ends and the page reconnects. Screenshots land in .data/screenshots/.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from durable_streams import api

from ..support import ROOT, unique

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = os.environ.get("DS_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / ".data" / "screenshots"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EVENTS = [
    {"headers": {"control": "snapshot-start"}},
    {
        "type": "member",
        "key": "ada",
        "value": {"name": "Ada", "role": "host"},
        "headers": {"operation": "insert"},
    },
    {
        "type": "member",
        "key": "alan",
        "value": {"name": "Alan", "role": "guest"},
        "headers": {"operation": "insert"},
    },
    {"headers": {"control": "snapshot-end"}},
]


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def chromium():
    """Debian's Chromium under Playwright. Started only after the test's data is
    committed: Playwright's sync API runs an event loop in this thread, and
    Django refuses ORM calls while one runs."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make chromium` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def stream(django_user_model) -> str:
    """A committed State Protocol stream, and an admin to look at it."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-pw")
    path = unique("rooms/lobby")
    api.create_stream(path, content_type="application/json", data=EVENTS)
    return path


def test_admin_shows_a_stream_and_its_live_tail_updates_without_reload(stream, server, http):
    with chromium() as browser:
        _look_and_follow(
            browser.new_page(viewport={"width": 1800, "height": 900}), stream, server, http
        )


def _look_and_follow(page, stream: str, server: str, http) -> None:
    from playwright.sync_api import expect

    # Searched for: other tests' streams may fill the list's first page.
    listing = quote(f"/admin/durable_streams/stream/?q={stream}", safe="")
    page.goto(f"{server}/admin/login/?next={listing}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pw")
    page.click("input[type=submit]")

    # The list, with the stream in it.
    expect(page.locator("#result_list")).to_contain_text(stream)
    expect(page.locator(f"#result_list tr:has-text('{stream}') .field-messages")).to_have_text("4")
    shot(page, "admin-stream-list.png")

    # The stream page: State Protocol events as a table.
    page.click(f"#result_list a:text-is('{stream}')")
    table = page.locator("#ds-state-events")
    expect(table).to_contain_text("control: snapshot-start")
    expect(table.locator("tbody tr").nth(1)).to_contain_text("member")
    expect(table.locator("tbody tr").nth(1)).to_contain_text("ada")
    expect(table.locator("tbody tr").nth(1)).to_contain_text("insert")
    expect(page.locator("#ds-live-status")).to_have_text("live", timeout=15_000)
    page.evaluate("window.__notReloaded = true")

    # Another client appends: the live tail shows it, and the tail offset moves.
    url = f"{server}/v1/stream/{stream}"
    joined = {
        "type": "member",
        "key": "grace",
        "value": {"name": "Grace"},
        "headers": {"operation": "insert"},
    }
    assert http.post(url, json=joined).status_code == 204
    # Rendered like the content view: one table row per event, with its offset.
    events = page.locator("#ds-live-events tbody tr")
    expect(events).to_have_count(1, timeout=15_000)
    cells = events.nth(0).locator("td")
    expect(cells).to_have_text(
        [
            "0000000000000000_0000000000000004",
            "member",
            "grace",
            "insert",
            re.compile(r'^\{\s*"name": "Grace"\s*\}$'),
            "",
        ]
    )
    expect(page.locator("#ds-tail-offset")).to_have_text("0000000000000000_0000000000000005")
    expect(page.locator("#ds-size")).to_have_text("5")
    shot(page, "admin-stream-live-tail.png")

    # The server ends SSE responses after SSE_MAX_DURATION (5 s in the tests);
    # the page resumes from the last offset it saw: no gap, no repeat.
    page.wait_for_timeout(6_000)
    left = {"type": "member", "key": "alan", "headers": {"operation": "delete"}}
    assert http.post(url, json=left).status_code == 204
    expect(events).to_have_count(2, timeout=15_000)
    expect(events.nth(1).locator("td")).to_have_text(
        ["0000000000000000_0000000000000005", "member", "alan", "delete", "", ""]
    )
    page.wait_for_timeout(500)
    expect(events).to_have_count(2)
    assert page.evaluate("window.__notReloaded") is True

    # Closing ends the live tail.
    assert http.post(url, headers={"Stream-Closed": "true"}).status_code == 204
    expect(page.locator("#ds-live-status")).to_have_text("stream closed", timeout=15_000)
    expect(page.locator("#ds-state")).to_have_text("closed")
    shot(page, "admin-stream-closed.png")
