"""A Channels project with WebSocket routes and ``AuthMiddlewareStack`` adds the
stream URLs to its existing router (tests/channelsapp/asgi.py) and daphne
serves both: streams with live reads, and a WebSocket that sees the session user."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ..admin_session import login
from ..support import unique

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(scope="module")
def channels_server(server_factory):
    server = server_factory("tests.channelsapp.asgi:application")
    yield server
    server.stop()


def test_streams_and_a_websocket_route_share_one_channels_router(
    channels_server, django_user_model
):
    import websockets

    django_user_model.objects.create_user("ada", password="ada-pw", is_staff=True)
    url = channels_server.stream_url(unique("channels"))
    with httpx.Client(timeout=30) as http:
        assert http.put(url, headers=TEXT, content=b"hello").status_code == 201
        assert http.post(url, headers=TEXT, content=b" world").status_code == 204
        live = http.get(url, params={"offset": "-1", "live": "long-poll"})
        assert live.status_code == 200
        assert live.content == b"hello world"
        # Django answers everything else, as before: the admin signs in.
        login(http, channels_server.url, "ada", "ada-pw")
        cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())

    async def ask(headers: dict[str, str]) -> dict:
        ws_url = channels_server.url.replace("http://", "ws://") + "/ws/whoami/"
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"ping": 1}))
            return json.loads(await asyncio.wait_for(ws.recv(), 30))

    origin = {"Origin": channels_server.url}
    assert asyncio.run(ask({**origin, "Cookie": cookie})) == {"echo": {"ping": 1}, "user": "ada"}
    assert asyncio.run(ask(origin)) == {"echo": {"ping": 1}, "user": None}
