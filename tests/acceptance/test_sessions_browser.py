"""Durable Sessions in a real browser: two users and an agent on one stream.

Debian's Chromium (never a downloaded build) under Playwright, two browser
contexts signed in as two members, against a daphne server with the
sessions' access policy, and the agent runner (``manage.py run_agents``) as
a separate process, woken by its pull-wake subscription (presence timers
shortened: pages beat every second, a silent tab is offline after 5 s). The offline agent
(Scribe) streams a deterministic reply at 0.1 s per token, so the test can
reload a page in the middle of a generation and compare the text it ends
with to the whole reply. Screenshots land in .data/screenshots/sessions-*.png.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import pytest

from example_project.sessions.agents import scribe_text

from ..support import ROOT, child_env
from .test_admin_browser import chromium, shot

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-browser-1"
TOKEN_SECONDS = "0.1"
WAIT_MS = 30_000  # the longest any one expectation waits (a bound, never asserted)
PROMPT = (
    "Please keep the minutes of our launch review: pricing page copy, onboarding emails, "
    "the status page, support rota for the first week, and who writes the changelog entry"
)


@pytest.fixture(scope="module")
def sessions_server(server_factory):
    from ..sessions_support import SESSIONS_POLICY

    # Pages beat every second, so the runner's sweep can be quick (below).
    server = server_factory(DS_TEST_POLICY=SESSIONS_POLICY, SESSIONS_HEARTBEAT_SECONDS="1")
    yield server.url
    server.stop()


@pytest.fixture
def agent_runner(test_database_url, tmp_path):
    """``manage.py run_agents`` in its own process, as ``make run`` starts it."""
    log = open(tmp_path / "agents.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_agents", "--name", "browser-test-runner"],
        cwd=ROOT,
        env=child_env(
            test_database_url,
            SESSIONS_OFFLINE_TOKEN_SECONDS=TOKEN_SECONDS,
            # A tab that stops beating is offline after 5 s (30 s by default).
            SESSIONS_OFFLINE_AFTER_SECONDS="5",
            SESSIONS_SWEEP_SECONDS="1",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    output = (tmp_path / "agents.log").read_text(errors="replace")
    assert "agent runner stopped" in output, output[-3000:]


@pytest.fixture
def session(django_user_model):
    """Ada, Alan and Grace are members (Grace joins late), Eve is not; Scribe is registered."""
    from durable_streams import api
    from example_project.sessions.models import ChatSession, Membership
    from example_project.sessions.views import register_agent

    suffix = uuid.uuid4().hex[:6]
    users = {
        name: django_user_model.objects.create_user(f"{name}-{suffix}", password=PASSWORD)
        for name in ("ada", "alan", "grace", "eve")
    }
    chat = ChatSession.objects.create(title="Launch review", created_by=users["ada"])
    for name in ("ada", "alan", "grace"):
        Membership.objects.create(session=chat, user=users[name])
    api.create_stream(chat.stream_path, content_type="application/json")
    register_agent(chat, "scribe")
    return chat, {name: user.username for name, user in users.items()}


def sign_in(browser, server: str, username: str):
    context = browser.new_context(viewport={"width": 1300, "height": 860})
    page = context.new_page()
    page.goto(f"{server}/sessions/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/sessions/$"))
    return context, page


def open_session(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#live-status")).to_have_text("live", timeout=WAIT_MS)


def say(page, text: str) -> None:
    from playwright.sync_api import expect

    page.fill("#message-input", text)
    page.press("#message-input", "Enter")
    # Sent once the page saw its own txid in the stream: the field is cleared.
    expect(page.locator("#message-input")).to_have_value("", timeout=WAIT_MS)


def reply_to(page, text: str):
    """The agent's reply to the user message whose text is ``text``."""
    user_message = page.locator("#messages li.message.user", has_text=text)
    message_id = user_message.get_attribute("data-message-id", timeout=WAIT_MS)
    return page.locator(f'#messages li[data-message-id="reply-scribe-{message_id}"]')


def transcript(page) -> list[tuple[str, str, str]]:
    """(author, state, text) of every message, in the order shown."""
    return [
        (
            li.get_attribute("data-actor-id"),
            li.get_attribute("data-state"),
            li.locator(".text").inner_text(),
        )
        for li in page.locator("#messages li.message").all()
    ]


def test_two_users_and_an_agent_share_a_session_live_through_a_reload(
    session, sessions_server, agent_runner
):
    from playwright.sync_api import expect

    chat, names = session
    url = f"{sessions_server}/sessions/{chat.pk}/"
    with chromium() as browser:
        ada_ctx, ada = sign_in(browser, sessions_server, names["ada"])
        alan_ctx, alan = sign_in(browser, sessions_server, names["alan"])
        open_session(ada, url)
        open_session(alan, url)

        # Each sees the other online, and the agent registered.
        for page in (ada, alan):
            expect(page.locator("#presence li")).to_have_count(2, timeout=WAIT_MS)
            expect(page.locator("#agents")).to_contain_text("Scribe (offline)")

        # Each sees the other's messages, live, without a reload.
        say(ada, "Morning Alan, shall we start?")
        expect(alan.locator("#messages")).to_contain_text("Morning Alan", timeout=WAIT_MS)
        say(alan, "Yes, go ahead")
        expect(ada.locator("#messages")).to_contain_text("Yes, go ahead", timeout=WAIT_MS)
        for page in (ada, alan):
            expect(reply_to(page, "Yes, go ahead")).to_have_attribute(
                "data-state", "done", timeout=WAIT_MS
            )

        # A long reply: both watch its tokens arrive.
        say(ada, PROMPT)
        expected = scribe_text(PROMPT)
        on_alan = reply_to(alan, PROMPT)
        expect(on_alan).to_have_attribute("data-state", "streaming", timeout=WAIT_MS)
        lengths = []
        deadline = time.monotonic() + WAIT_MS / 1000
        while len(set(lengths)) < 4 and time.monotonic() < deadline:
            lengths.append(len(on_alan.locator(".text").inner_text()))
            alan.wait_for_timeout(150)
        assert len(set(lengths)) >= 4 and lengths == sorted(lengths), lengths
        assert lengths[-1] < len(expected)  # still streaming: tokens arrive one by one
        shot(ada, "sessions-ada-streaming.png")
        shot(alan, "sessions-alan-streaming.png")

        # Alan reloads in the middle of the generation...
        before_reload = on_alan.locator(".text").inner_text()
        assert on_alan.get_attribute("data-state") == "streaming"
        alan.reload()
        expect(alan.locator("#live-status")).to_have_text("live", timeout=WAIT_MS)
        on_alan = reply_to(alan, PROMPT)
        # ...and catches up then follows: the whole reply, no token lost or repeated.
        expect(on_alan).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        assert on_alan.locator(".text").inner_text() == expected
        assert expected.startswith(before_reload) and len(before_reload) < len(expected)
        on_ada = reply_to(ada, PROMPT)
        expect(on_ada).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        assert on_ada.locator(".text").inner_text() == expected
        shot(alan, "sessions-alan-after-reload.png")
        assert transcript(alan) == transcript(ada)
        assert len(transcript(ada)) == 6  # three user messages, three replies

        # A late joiner sees the whole history.
        grace_ctx, grace = sign_in(browser, sessions_server, names["grace"])
        open_session(grace, url)
        expect(grace.locator("#messages li.message")).to_have_count(6, timeout=WAIT_MS)
        assert transcript(grace) == transcript(ada)
        expect(grace.locator("#presence li")).to_have_count(3, timeout=WAIT_MS)
        shot(grace, "sessions-grace-late-joiner.png")

        # A tab closed without a goodbye (no pagehide: the browser context is
        # destroyed) goes offline for the others once it stopped beating.
        alan_ctx.close()
        expect(ada.locator("#presence li")).to_have_count(2, timeout=WAIT_MS)
        expect(ada.locator("#presence")).not_to_contain_text(names["alan"])

        # A non-member is refused: the page and the stream itself.
        eve_ctx, eve = sign_in(browser, sessions_server, names["eve"])
        response = eve.goto(url)
        assert response is not None and response.status == 403
        expect(eve.locator("#forbidden")).to_contain_text("not a member of this session")
        stream = eve.request.get(f"{sessions_server}/v1/stream/{chat.stream_path}?offset=-1")
        assert stream.status == 403
        shot(eve, "sessions-eve-refused.png")
        shot(ada, "sessions-ada-final.png")
        for context in (ada_ctx, grace_ctx, eve_ctx):
            context.close()
