"""Shutdown ends live responses at once (issue 10, finding 9): on SIGTERM a
waiting long-poll answers and an SSE response ends, so clients reconnect to
another process, and the server exits without waiting for them. Under uvicorn,
which otherwise waits for every open response to finish, and under daphne."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from ..support import SSE, await_waiting_readers, unique

pytestmark = pytest.mark.django_db

# The live reads last 120 s; everything below must happen well before.
LIVE = "120"
BOUND = 60.0


@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
def test_sigterm_ends_live_responses_at_once_and_the_server_exits(server_factory, server_name):
    server = server_factory(
        server=server_name, DS_TEST_LONG_POLL_TIMEOUT=LIVE, DS_TEST_SSE_MAX_DURATION=LIVE
    )
    url = server.stream_url(unique("shutdown"))
    assert httpx.put(url, headers={"Content-Type": "text/plain"}, content=b"a").status_code == 201
    outcome: dict[str, object] = {}
    await_waiting_readers(server.url, 0)

    def sse_reader() -> None:
        with (
            httpx.Client(timeout=BOUND) as client,
            client.stream("GET", url, params={"offset": "-1", "live": "sse"}) as response,
        ):
            controls = []
            for event, data in SSE(response, time.monotonic() + BOUND).events():
                if event == "control":
                    controls.append(json.loads(data))
            outcome["sse"] = controls  # the response ended

    def long_poll() -> None:
        response = httpx.get(
            url, params={"offset": "-1", "live": "long-poll", "cursor": "1"}, timeout=BOUND
        )
        first = response.headers["Stream-Next-Offset"]
        response = httpx.get(url, params={"offset": first, "live": "long-poll"}, timeout=BOUND)
        outcome["long-poll"] = response.status_code

    threads = [threading.Thread(target=sse_reader), threading.Thread(target=long_poll)]
    for thread in threads:
        thread.start()
    await_waiting_readers(server.url, 2)
    assert server.proc is not None
    server.proc.terminate()  # SIGTERM
    for thread in threads:
        thread.join(BOUND + 5)
    assert server.proc.wait(timeout=BOUND) is not None  # exited, not after LIVE seconds
    assert outcome["long-poll"] == 204
    controls = outcome["sse"]
    assert isinstance(controls, list) and controls[0]["upToDate"] is True
