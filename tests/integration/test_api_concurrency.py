"""The in-process API from many threads and from coroutines (committed data)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from durable_streams import api
from durable_streams.exceptions import Conflict, NotFound
from durable_streams.producers import Producer

from ..support import close_executor_connections, read_bytes, unique

pytestmark = pytest.mark.django_db(transaction=True)


def run_threads(count: int, target) -> None:
    errors: list[BaseException] = []

    def wrapped(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_concurrent_appends_from_threads_get_disjoint_gap_free_ranges():
    path = unique()
    api.create_stream(path, content_type="text/plain")
    acks: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        for i in range(25):
            data = f"<{index}:{i}:{'x' * ((index + i) % 5)}>".encode()
            end = api.append(path, data).next_position
            with lock:
                acks.append((end, data))

    run_threads(8, writer)
    stored = read_bytes(path)
    position = 0
    for end, data in sorted(acks):
        assert end - len(data) == position  # starts exactly where the last one ended
        assert stored[position:end] == data
        position = end
    assert position == len(stored) == api.head(path).tail


def test_concurrent_producers_in_threads_append_each_seq_exactly_once():
    path = unique()
    api.create_stream(path, content_type="application/json")

    def producer(index: int) -> None:
        for seq in range(20):
            for _attempt in range(2):  # every request is retried once
                api.append(path, {"p": index, "s": seq}, producer=Producer(f"p{index}", 0, seq))

    run_threads(5, producer)
    messages, _ = api.read_json(path)
    for index in range(5):
        assert [m["s"] for m in messages if m["p"] == index] == list(range(20))
    assert len(messages) == 100


def test_concurrent_close_and_appends_never_write_after_the_close():
    path = unique()
    api.create_stream(path, content_type="text/plain")
    appenders = 4
    # The close waits until every appender has written, so it lands mid-stream.
    started = threading.Barrier(appenders + 1, timeout=30)
    closed_at: list[int] = []
    written = [0] * (appenders + 1)
    late: list[int] = []

    def actor(index: int) -> None:
        if index == 0:
            started.wait()
            closed_at.append(api.close(path).next_position)
            return
        for attempt in range(2_000):  # until the close refuses one
            try:
                api.append(path, "x")
            except Conflict as exc:
                assert exc.headers["Stream-Closed"] == "true"
                late.append(index)
                return
            written[index] += 1
            if attempt == 0:
                started.wait()

    run_threads(appenders + 1, actor)
    meta = api.head(path)
    assert meta.closed
    # Every appender was refused once the stream closed, and kept nothing of it.
    assert sorted(late) == list(range(1, appenders + 1))
    assert all(written[1:])
    assert meta.tail == closed_at[0] == sum(written) == len(read_bytes(path))


@pytest.fixture
async def executor_connections():
    yield
    close_executor_connections()


# --- async twins ------------------------------------------------------------------------------


async def test_async_api_round_trip(executor_connections):
    path = unique()
    meta = await api.acreate_stream(path, content_type="application/json", data=[1])
    assert meta.tail == 1
    result = await api.aappend(path, [2, 3])
    assert result.next_position == 3
    chunk = await api.aread(path)
    assert chunk.body == b"[1,2,3]"
    assert (await api.ahead(path)).tail == 3
    closed = await api.aclose(path)
    assert closed.closed
    await api.adelete(path)
    with pytest.raises(NotFound):
        await api.ahead(path)


async def test_async_appends_run_concurrently_and_stay_gap_free(executor_connections):
    import asyncio

    path = unique()
    await api.acreate_stream(path, content_type="text/plain")
    results = await asyncio.gather(*(api.aappend(path, "ab") for _ in range(40)))
    assert sorted(r.next_position for r in results) == list(range(2, 82, 2))
    assert (await api.aread(path)).body == b"ab" * 40
