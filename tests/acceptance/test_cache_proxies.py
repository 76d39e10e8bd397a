"""The shipped cache configurations (deploy/nginx-cache.conf and
deploy/varnish-cache.vcl) in front of daphne: long-poll readers collapse into
about one origin request per append, every reader gets every message once;
SSE and HEAD pass through uncached."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bench import nginx, varnish

from ..support import await_waiting_readers, unique

pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}
READERS = 40
APPENDS = 6


@pytest.fixture(scope="module")
def origin(server_factory):
    # Long-polls that outlast the test: a 204 timeout would make readers
    # move on one by one, which is not what is measured here.
    server = server_factory(DS_TEST_LONG_POLL_TIMEOUT="60", DS_TEST_SSE_MAX_DURATION="60")
    yield server
    server.stop()


# What each cache says in X-Cache-Status for a request it sent on uncached.
BYPASSED = {"nginx": "BYPASS", "varnish": "PASS"}


CACHES = [
    pytest.param(
        kind,
        marks=pytest.mark.skipif(
            not module.available(), reason=f"{kind} is installed by `make pytest`"
        ),
    )
    for kind, module in (("nginx", nginx), ("varnish", varnish))
]


def _start(kind: str, origin_port: int):
    if kind == "nginx":
        proxy = nginx.NginxCache(origin_port, lock_timeout=90).start()
    else:
        proxy = varnish.VarnishCache(origin_port).start()
    proxy.kind = kind
    return proxy


@pytest.fixture(scope="module", params=CACHES)
def cache(request, origin):
    proxy = _start(request.param, origin.port)
    yield proxy
    proxy.stop()


async def _reader(client: httpx.AsyncClient, url: str, offset: str, want: int, got: list) -> None:
    cursor = None
    while len(got) < want:
        params = {"live": "long-poll", "offset": offset}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(url, params=params)
        assert response.status_code in (200, 204), response.text
        if response.status_code == 200:
            got.append(response.content)
        offset = response.headers["Stream-Next-Offset"]
        cursor = response.headers.get("Stream-Cursor")


async def _run_readers(cache, origin, url: str, tail: str) -> list[list[bytes]]:
    path = url.split(cache.url, 1)[1]
    direct = origin.url + path
    got: list[list[bytes]] = [[] for _ in range(READERS)]
    limits = httpx.Limits(max_connections=READERS + 5)
    async with (
        httpx.AsyncClient(timeout=120, limits=limits) as client,
        httpx.AsyncClient(timeout=30) as writer,
    ):
        tasks = [
            asyncio.create_task(_reader(client, url, tail, APPENDS, got[i])) for i in range(READERS)
        ]
        for n in range(APPENDS):
            # The lock holder reached the origin (one waiting reader) and every
            # reader has the previous message: all of them wait on one key.
            await asyncio.to_thread(await_waiting_readers, origin.url, 1)
            await _until(lambda n=n: all(len(g) == n for g in got), tasks)
            await asyncio.sleep(0.2)  # the rest queue on the cache's lock
            response = await writer.post(direct, headers=TEXT, content=f"m{n}".encode())
            assert response.status_code == 204
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return got


async def _until(condition, tasks, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()
        assert time.monotonic() < deadline, "readers did not catch up"
        await asyncio.sleep(0.02)


def test_long_poll_readers_through_the_cache_cost_one_origin_request_per_append(origin, cache):
    path = unique("cache")
    url = f"{cache.url}/v1/stream/{path}"
    tail = httpx.put(origin.stream_url(path), headers=TEXT).headers["Stream-Next-Offset"]
    before = cache.origin_reads()
    got = asyncio.run(_run_readers(cache, origin, url, tail))
    assert all(g == [f"m{n}".encode() for n in range(APPENDS)] for g in got), got[:3]
    # nginx logs a request when it ends: let it log the last ones.
    time.sleep(0.5)
    origin_reads = cache.origin_reads() - before
    # One request per append collects its data; one more waits for the next
    # append and is still open at the end. A little slack for a reader that
    # raced the cache entry's store, never one per reader.
    assert APPENDS <= origin_reads <= APPENDS + 3, (origin_reads, cache.entries()[-20:])


def test_the_close_reaches_every_waiting_reader_through_one_origin_request(origin, cache):
    path = unique("cache-close")
    url = f"{cache.url}/v1/stream/{path}"
    tail = httpx.put(origin.stream_url(path), headers=TEXT).headers["Stream-Next-Offset"]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            timeout=120, limits=httpx.Limits(max_connections=READERS + 5)
        ) as client:
            params = {"live": "long-poll", "offset": tail}
            tasks = [asyncio.create_task(client.get(url, params=params)) for _ in range(READERS)]
            await asyncio.to_thread(await_waiting_readers, origin.url, 1)
            await asyncio.sleep(0.3)
            before = cache.origin_reads()
            await client.post(origin.stream_url(path), headers={"Stream-Closed": "true"})
            responses = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            responses.append(before)
            return responses

    *responses, before = asyncio.run(run())
    assert {(r.status_code, r.headers.get("Stream-Closed")) for r in responses} == {(204, "true")}
    time.sleep(0.5)
    assert cache.origin_reads() - before <= 1


def test_sse_and_head_pass_through_the_cache(origin, cache):
    path = unique("cache-sse")
    url = f"{cache.url}/v1/stream/{path}"
    httpx.put(origin.stream_url(path), headers=TEXT, content=b"abc")
    for _ in range(2):
        head = httpx.head(url)
        assert head.status_code == 200 and head.headers["X-Cache-Status"] != "HIT"
        # The origin answered a HEAD (no-store), not a GET the cache made of it.
        assert head.headers["Cache-Control"] == "no-store"
        assert head.headers["Stream-Next-Offset"]
    with httpx.stream("GET", url, params={"offset": "-1", "live": "sse"}, timeout=30) as sse:
        assert sse.headers["X-Cache-Status"] == BYPASSED[cache.kind]
        assert sse.headers["Content-Type"].startswith("text/event-stream")
        first = next(sse.iter_raw())
        assert b"abc" in first
    # A catch-up read is cached: the second one is a hit.
    httpx.get(url, params={"offset": "-1"})
    assert httpx.get(url, params={"offset": "-1"}).headers["X-Cache-Status"] == "HIT"


@pytest.fixture(scope="module")
def idle_origin(server_factory):
    server = server_factory(DS_TEST_LONG_POLL_TIMEOUT="2")
    yield server
    server.stop()


@pytest.mark.parametrize("kind", [CACHES[1]])
def test_a_long_poll_timeout_reaches_every_waiting_reader_through_one_origin_request(
    idle_origin, kind
):
    # The timeout 204 is no-store. Handed only to the request that fetched it,
    # the readers waiting behind it would each go to the server (Varnish's
    # hit-for-miss), or one after another, each waiting a whole timeout.
    proxy = _start(kind, idle_origin.port)
    try:
        path = unique("cache-idle")
        url = f"{proxy.url}/v1/stream/{path}"
        tail = httpx.put(idle_origin.stream_url(path), headers=TEXT).headers["Stream-Next-Offset"]

        async def run() -> tuple[list[httpx.Response], int, float]:
            async with httpx.AsyncClient(
                timeout=60, limits=httpx.Limits(max_connections=READERS + 5)
            ) as client:
                params = {"live": "long-poll", "offset": tail}
                before = proxy.origin_reads()
                t0 = time.monotonic()
                tasks = [
                    asyncio.create_task(client.get(url, params=params)) for _ in range(READERS)
                ]
                responses = await asyncio.wait_for(asyncio.gather(*tasks), 60)
                return responses, before, time.monotonic() - t0

        responses, before, elapsed = asyncio.run(run())
        assert {r.status_code for r in responses} == {204}
        assert len({r.headers["Stream-Cursor"] for r in responses}) == 1
        assert proxy.origin_reads() - before == 1
        assert elapsed < 2 * 2, elapsed  # one timeout, not one after another
    finally:
        proxy.stop()
