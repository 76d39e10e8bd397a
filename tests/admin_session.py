"""Logging in to the admin of a running server over real HTTP, as a browser does."""

from __future__ import annotations

import re

import httpx


def login(client: httpx.Client, server_url: str, username: str, password: str) -> None:
    """Post the admin login form; the client then holds the session cookie."""
    page = client.get(server_url + "/admin/login/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert token, page.text[:300]
    response = client.post(
        server_url + "/admin/login/",
        data={
            "csrfmiddlewaretoken": token.group(1).decode(),
            "username": username,
            "password": password,
        },
    )
    assert response.status_code == 302, response.text[:300]
