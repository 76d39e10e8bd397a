"""Signing in to a running server over real HTTP, as a browser does: the one
home of the login-form helper (the admin's and the Durable Sessions' pages)."""

from __future__ import annotations

import re

import httpx

ADMIN_LOGIN = "/admin/login/"


def login(
    client: httpx.Client, server_url: str, username: str, password: str, page: str = ADMIN_LOGIN
) -> None:
    """Post the Django login form at ``page`` (the admin's by default) with
    its CSRF token; the client then holds the session cookie."""
    form = client.get(server_url + page)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.content)
    assert token, form.text[:300]
    response = client.post(
        server_url + page,
        data={
            "csrfmiddlewaretoken": token.group(1).decode(),
            "username": username,
            "password": password,
        },
    )
    assert response.status_code == 302, response.text[:300]
