"""The example project's front page: what `make run` shows at its root."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_root_page_links_the_demo_the_admin_and_shows_the_stream_url(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/sessions/"' in page
    assert 'href="/admin/"' in page
    assert 'href="/api/durable-streams/"' in page
    # The curl lines use the address the page was served from.
    assert "http://testserver/v1/stream/chat" in page
