"""The stream admin as a person sees it, in a real browser (issue 11, item 12):
every column of the stream list fits a 1280-pixel screen, "Close stream" asks
before it closes, and the live tail renders JSON like the content view.
Screenshots land in .data/screenshots/.
"""

from __future__ import annotations

import re

import pytest

from durable_streams import api

from ..support import unique
from .test_admin_browser import chromium, shot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_user(django_user_model) -> None:
    django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-pw")


def _sign_in(page, server: str, next_url: str) -> None:
    page.goto(f"{server}/admin/login/?next={next_url}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pw")
    page.click("input[type=submit]")


def test_stream_list_shows_every_column_on_a_1280_pixel_screen(admin_user, server):
    prefix = unique("layout")
    long_path = f"{prefix}/tenants/acme-corporation/projects/2026/rooms/lobby-with-a-long-name"
    api.create_stream(long_path, content_type="application/json", data=[{"a": 1}] * 3)
    api.create_stream(
        f"{prefix}/logs/worker-7", content_type="text/plain; charset=utf-8", data=b"x" * 12345
    )
    api.create_stream(
        f"{prefix}/blobs/upload", content_type="application/octet-stream", ttl_seconds=3600
    )
    api.close(f"{prefix}/logs/worker-7")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        _sign_in(page, server, f"/admin/durable_streams/stream/?q={prefix}")
        page.locator("#result_list").wait_for()
        shot(page, "admin-stream-list-1280.png")
        # Nothing is cut off: the table fits its box (no horizontal scrolling)
        # and every column's right edge is on the screen.
        fits = page.evaluate(
            "() => { const r = document.querySelector('#changelist-form .results');"
            " return [r.scrollWidth, r.clientWidth]; }"
        )
        assert fits[0] <= fits[1], f"the stream list is {fits[0]} px wide in a {fits[1]} px box"
        headers = page.locator("#result_list thead th")
        names = [name.strip().lower() for name in headers.all_inner_texts()]
        assert names[-1] == "forks"
        for index in range(headers.count()):
            box = headers.nth(index).bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1280, names[index]
        assert page.locator("#changelist-filter").is_visible()
        # The rows show what they should, in full.
        row = page.locator(f"#result_list tr:has-text('{prefix}/logs/worker-7')")
        assert row.locator(".field-size").inner_text().split() == ["12,345", "B"]
        assert row.locator(".field-state").inner_text().strip() == "closed"
        long_cell = page.locator(f"#result_list a:has-text('{prefix}/tenants')")
        assert long_cell.inner_text().replace("\n", "") == long_path


def test_close_stream_asks_for_confirmation_and_cancel_keeps_it_open(admin_user, server, http):
    path = unique("confirm/close")
    api.create_stream(path, content_type="application/json", data=[{"n": 1}])
    url = f"{server}/v1/stream/{path}"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        _sign_in(page, server, "/admin/durable_streams/stream/")
        page.click(f"#result_list a:text-is('{path}')")
        page.locator("#ds-close").wait_for()

        asked: list[str] = []

        def dismiss(dialog):
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        page.click("#ds-close")
        page.wait_for_timeout(500)
        assert len(asked) == 1 and path in asked[0] and "cannot be reopened" in asked[0]
        assert page.locator("#ds-state").inner_text() == "open"
        assert "Stream-Closed" not in http.head(url).headers

        def accept(dialog):
            asked.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        page.click("#ds-close")
        page.locator("#ds-state", has_text="closed").wait_for(timeout=15_000)
        assert len(asked) == 2
        assert http.head(url).headers.get("Stream-Closed") == "true"
        shot(page, "admin-stream-closed-after-confirm.png")


def test_live_tail_renders_json_messages_like_the_content_view(admin_user, server, http):
    from playwright.sync_api import expect

    path = unique("tail/json")
    api.create_stream(path, content_type="application/json", data=[{"greeting": "hello"}])
    url = f"{server}/v1/stream/{path}"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        _sign_in(page, server, "/admin/durable_streams/stream/")
        page.click(f"#result_list a:text-is('{path}')")
        expect(page.locator("#ds-live-status")).to_have_text("live", timeout=15_000)

        sent = [{"user": "ada", "text": "hi", "tags": ["a", "b"]}, {"user": "alan", "n": 2}]
        assert http.post(url, json=sent).status_code == 204
        rows = page.locator("#ds-live-events tbody tr")
        expect(rows).to_have_count(2, timeout=15_000)
        expect(page.locator("#ds-live-events thead th")).to_have_text(["Offset", "Message"])
        # Same columns and rendering as the content table: the offset, then the
        # message pretty-printed (indented, one key a line), not one raw line.
        content_first = page.locator("#ds-json-messages tbody tr").first.locator("pre")
        assert content_first.inner_text() == '{\n  "greeting": "hello"\n}'
        first = rows.nth(0).locator("td")
        expect(first.nth(0)).to_have_text("0000000000000000_0000000000000001")
        assert first.nth(1).locator("pre").inner_text() == (
            '{\n  "user": "ada",\n  "text": "hi",\n  "tags": [\n    "a",\n    "b"\n  ]\n}'
        )
        expect(rows.nth(1).locator("td").nth(0)).to_have_text("0000000000000000_0000000000000002")
        expect(rows.nth(1).locator("pre")).to_have_text(re.compile(r'"user": "alan",\s+"n": 2'))
        shot(page, "admin-live-tail-json.png")
