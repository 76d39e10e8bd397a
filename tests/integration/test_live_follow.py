"""live.Follow, the one follow loop, against real Postgres: first read, catch-up,
wake-ups by NOTIFY, the commit between the first read and the subscription,
deadlines, idle ticks, the listener-down fallback and failed reads."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings

from durable_streams import api, live, offsets, storage
from durable_streams.exceptions import BadRequest, Gone, NotFound
from durable_streams.models import Segment

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20.0  # seconds any step may take at most before the test gives up


@pytest.fixture
async def cleanup():
    yield
    await live.get_listener().stop()
    await storage.close_pool()


def name() -> str:
    return f"follow/{uuid.uuid4().hex}"


async def create(path: str, data: str | None = "a", **kwargs) -> None:
    await sync_to_async(api.create_stream)(path, content_type="text/plain", data=data, **kwargs)


async def append(path: str, data: str, **kwargs) -> None:
    await sync_to_async(api.append)(path, data, **kwargs)


async def collect(reads: live.Follow, count: int) -> list:
    events = []
    async for event in reads:
        events.append(event)
        if len(events) == count:
            break
    return events


async def test_first_read_then_one_read_per_commit(cleanup):
    path = name()
    await create(path)
    async with live.Follow(path, 0, until=time.monotonic() + WAIT) as reads:
        first = await asyncio.wait_for(anext(aiter(reads)), WAIT)
        assert (first.body, first.up_to_date) == (b"a", True)
        writer = asyncio.create_task(append(path, "bc"))
        second = await asyncio.wait_for(anext(aiter(reads)), WAIT)
        await writer
        assert reads.last is second
    assert (second.body, second.start, second.next_offset) == (b"bc", 1, offsets.encode(3))


async def test_a_commit_between_the_first_read_and_the_subscription_is_not_missed(cleanup):
    path = name()
    await create(path)
    listener = live.get_listener()
    await listener.start()
    reads = live.Follow(path, None, until=time.monotonic() + 3.0)
    first = await reads.start()
    assert first.units == 0 and first.up_to_date
    seen = listener.notifications
    await append(path, "late")
    # Let the listener take the NOTIFY before the follow subscribes, so only
    # the record of recent notifications can tell the follow about it.
    for _ in range(int(WAIT / 0.01)):
        if listener.notifications > seen:
            break
        await asyncio.sleep(0.01)
    async with reads:
        bodies = [event.body async for event in reads if event is not live.IDLE]
    assert b"late" in bodies


async def test_catch_up_reads_chunk_after_chunk_without_waiting(cleanup):
    path = name()
    await create(path, data="x" * 10)
    with override_settings(DURABLE_STREAMS={"MAX_CHUNK_SIZE": 4}):
        async with live.Follow(path, 0, until=time.monotonic() + WAIT) as reads:
            chunks = await asyncio.wait_for(collect(reads, 3), WAIT)
    assert [c.body for c in chunks] == [b"xxxx", b"xxxx", b"xx"]
    assert [c.up_to_date for c in chunks] == [False, False, True]


async def test_following_ends_after_the_read_that_reaches_the_end_of_a_closed_stream(cleanup):
    path = name()
    await create(path)
    async with live.Follow(path, 0, until=time.monotonic() + WAIT) as reads:
        events = []
        closer = None
        async for event in reads:
            events.append(event)
            if closer is None:
                closer = asyncio.create_task(append(path, "z", close=True))
        await closer
    assert [e.body for e in events] == [b"a", b"z"] and events[-1].closed


async def test_the_deadline_ends_an_idle_follow_with_the_last_read(cleanup):
    path = name()
    await create(path)
    async with live.Follow(path, None, until=time.monotonic() + 0.5) as reads:
        events = [event async for event in reads]
    assert len(events) == 1 and events[0].units == 0
    assert reads.last.next_offset == offsets.encode(1)


async def test_idle_ticks_come_while_nothing_changes(cleanup):
    path = name()
    await create(path)
    async with live.Follow(path, None, until=time.monotonic() + WAIT, idle=0.2) as reads:
        events = await asyncio.wait_for(collect(reads, 3), WAIT)
    assert events[1:] == [live.IDLE, live.IDLE]


async def test_the_first_read_raises_the_protocols_own_errors(cleanup):
    with pytest.raises(NotFound):
        await live.Follow(name(), 0).start()
    path = name()
    await create(path)
    with pytest.raises(BadRequest, match="beyond the end"):
        await live.Follow(path, 5).start()


async def test_a_stream_deleted_while_followed_ends_the_follow_with_its_error(cleanup):
    path = name()
    await create(path)
    async with live.Follow(path, None, until=time.monotonic() + WAIT) as reads:
        await reads.start()
        await sync_to_async(api.delete)(path)
        with pytest.raises((NotFound, Gone)):
            await asyncio.wait_for(collect(reads, 3), WAIT)


async def test_with_the_listener_down_followers_poll_tick_and_still_see_commits(
    cleanup, monkeypatch
):
    path = name()
    await create(path)
    await live.get_listener().stop()
    # A real refused connection: nothing listens on this loopback port.
    monkeypatch.setattr(live, "connection_params", lambda: {"host": "127.0.0.1", "port": 9})
    with override_settings(DURABLE_STREAMS={"FALLBACK_POLL_INTERVAL": 0.1}):
        async with live.Follow(path, None, until=time.monotonic() + WAIT, idle=0.3) as reads:
            await reads.start()
            assert not live.get_listener().healthy
            # Idle ticks keep coming while the listener is down.
            ticks = await asyncio.wait_for(collect_until(reads, lambda e: e is live.IDLE), WAIT)
            assert ticks[-1] is live.IDLE
            await append(path, "polled")
            events = await asyncio.wait_for(
                collect_until(reads, lambda e: e is not live.IDLE and e.units), WAIT
            )
    assert events[-1].body == b"polled"


async def collect_until(reads: live.Follow, done) -> list:
    events = []
    async for event in reads:
        events.append(event)
        if done(event):
            break
    return events


def _rename_segments(old: str, new: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")


async def test_a_failed_database_read_ends_the_follow_with_read_failed(cleanup):
    path = name()
    await create(path)
    table = Segment._meta.db_table
    async with live.Follow(path, None, until=time.monotonic() + WAIT) as reads:
        await reads.start()
        await append(path, "after")
        # Every read of stream data now fails in the database.
        await sync_to_async(_rename_segments)(table, table + "_away")
        try:
            with pytest.raises(live.ReadFailed) as failed:
                await asyncio.wait_for(
                    collect_until(reads, lambda e: e is not live.IDLE and e.units), WAIT
                )
        finally:
            await sync_to_async(_rename_segments)(table + "_away", table)
    assert failed.value.status == 503
