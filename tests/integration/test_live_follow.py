"""live.Follow, the one follow loop, against real Postgres: first read, catch-up,
wake-ups by NOTIFY, the commit between the first read and the subscription,
deadlines, idle ticks, the listener-down fallback and failed reads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.test import override_settings

from durable_streams import api, live, offsets, storage
from durable_streams.conf import ds_settings
from durable_streams.exceptions import BadRequest, Gone, NotFound
from durable_streams.models import Segment, Stream

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20.0  # seconds any step may take at most before the test gives up


@pytest.fixture
async def cleanup():
    yield
    await live.get_listener().stop()


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


async def test_followers_waiting_at_the_tail_share_one_read_of_each_commit(cleanup):
    path = name()
    await create(path)
    follows = [live.Follow(path, None, until=time.monotonic() + WAIT) for _ in range(20)]
    try:
        firsts = await asyncio.gather(*(anext(aiter(f)) for f in follows))
        nexts = [asyncio.create_task(anext(aiter(f))) for f in follows]
        feed = live.get_listener().feed(firsts[0].stream.id)

        async def all_waiting() -> bool:
            return feed.waiting == len(follows)

        await until(all_waiting, "every follower to wait at the tail")
        await append(path, "b")
        results = await asyncio.wait_for(asyncio.gather(*nexts), WAIT)
        # One read, handed to every follower: the very same result.
        assert all(result is results[0] for result in results)
        assert (results[0].body, results[0].start) == (b"b", 1)
    finally:
        for follow in follows:
            await follow.aclose()
    assert live.get_listener().feed(firsts[0].stream.id) is None


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


# --- shared reads: which in-flight read a reader may take as its own ---------------------------


async def lock_waits(monitor, event: str | None = None) -> int:
    """Sessions of this database waiting for a lock (of kind ``event``: 'relation', ...)."""
    cur = await monitor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND (%s::text IS NULL OR wait_event = %s)",
        [event, event],
    )
    return (await cur.fetchone())[0]


async def until(check, what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def sessions():
    """``connect()``: psycopg sessions of the test's own beside the pool, closed at the end."""
    opened = []

    async def connect(autocommit: bool = False):
        conn = await psycopg.AsyncConnection.connect(
            **storage.connection_params(), autocommit=autocommit
        )
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        await conn.close()


def segments_lock_sql() -> str:
    # Stops reads at their data query, after they read the stream's tail
    # (a read with nothing to read makes none).
    return f"LOCK TABLE {Segment._meta.db_table} IN ACCESS EXCLUSIVE MODE"


async def test_a_read_started_before_a_commit_is_not_shared_with_a_reader_after_it(
    cleanup, sessions
):
    path = name()
    # A TTL: each read updates the row. Data: each read from 0 queries the segments.
    await create(path, data="a", ttl_seconds=3600)
    monitor = await sessions(autocommit=True)
    # 1. An append holds the stream's row, uncommitted, until ``go``.
    holding, go = threading.Event(), threading.Event()

    def append_held() -> None:
        try:
            with transaction.atomic():
                api.append(path, "x")
                holding.set()
                go.wait(WAIT)
        finally:
            connection.close()

    writer = threading.Thread(target=append_held)
    writer.start()
    try:
        assert await asyncio.to_thread(holding.wait, WAIT)
        # 2. An early read: it reads the tail before the commit, then waits
        # for the row (its TTL update) behind the append.
        early = asyncio.create_task(storage.aread(path, 0, shared_since=time.monotonic()))
        await until(lambda: lock_waits(monitor), "the early read to wait for the row")
        # 3. A session queues for the segment table behind the append: once the
        # append commits it holds the table, so the early read stays in flight.
        blocker = await sessions()
        table_lock = asyncio.create_task(blocker.execute(segments_lock_sql()))
        await until(lambda: lock_waits(monitor, "relation"), "the table lock to queue")
    finally:
        go.set()
        await asyncio.to_thread(writer.join, WAIT)
    await asyncio.wait_for(table_lock, WAIT)
    await until(lambda: lock_waits(monitor, "relation"), "the early read to wait for the table")
    assert not early.done()
    # 4. A reader that knows of the commit may not take the early read.
    late = asyncio.create_task(storage.aread(path, 0, shared_since=time.monotonic()))
    await asyncio.sleep(0.1)
    await blocker.commit()
    early_result, late_result = await asyncio.wait_for(asyncio.gather(early, late), WAIT)
    assert early_result.body == b"a"  # it had read the tail before the commit
    assert late_result.body == b"ax"


async def test_a_read_in_flight_at_another_offset_is_not_shared(cleanup, sessions):
    path = name()
    await create(path, data="abcdef")
    blocker = await sessions()
    await blocker.execute(segments_lock_sql())
    monitor = await sessions(autocommit=True)
    since = time.monotonic()
    first = asyncio.create_task(storage.aread(path, 0, shared_since=since))
    await until(lambda: lock_waits(monitor, "relation"), "the first read to wait")
    # Started after ``since``, so eligible by time, but at another offset.
    other = asyncio.create_task(storage.aread(path, 3, shared_since=since))
    same = asyncio.create_task(storage.aread(path, 0, shared_since=since))
    await asyncio.sleep(0.1)
    await blocker.commit()
    results = await asyncio.wait_for(asyncio.gather(first, other, same), WAIT)
    assert [r.body for r in results] == [b"abcdef", b"def", b"abcdef"]
    assert [r.start for r in results] == [0, 3, 0]


# --- a reader coming back at the tail a feed already knows ----------------------------------


def stream_lock_sql() -> str:
    # Stops every read at its first query (the stream's row).
    return f"LOCK TABLE {Stream._meta.db_table} IN ACCESS EXCLUSIVE MODE"


async def follower_at_tail(path: str) -> tuple[live.Follow, live.Feed, asyncio.Task]:
    """A follower of ``path`` that has read one commit through its feed's
    shared read and waits at the new tail; the task is its next event."""
    follow = live.Follow(path, None, until=time.monotonic() + WAIT)
    first = await follow.start()
    following = asyncio.create_task(anext(aiter(follow)))
    await following  # the first read itself
    feed = live.get_listener().feed(first.stream.id)
    assert feed is not None

    async def waiting() -> bool:
        return feed.waiting == 1

    nxt = asyncio.create_task(anext(aiter(follow)))
    await until(waiting, "the follower to wait at the tail")
    await append(path, "b")
    assert (await asyncio.wait_for(nxt, WAIT)).body == b"b"
    pending = asyncio.create_task(anext(aiter(follow)))
    await until(waiting, "the follower to wait at the new tail")
    return follow, feed, pending


async def test_a_reader_coming_back_at_the_followed_tail_starts_without_a_query(cleanup, sessions):
    path = name()
    await create(path)
    follow, _, pending = await follower_at_tail(path)
    blocker = await sessions()
    try:
        await blocker.execute(stream_lock_sql())
        # No read can pass the lock: an answer means no query was made.
        again = live.Follow(path, 2, until=time.monotonic() + WAIT)
        first = await asyncio.wait_for(again.start(), 2.0)
        assert (first.units, first.body, first.next_offset) == (0, b"", offsets.encode(2))
        assert first.up_to_date and not first.closed
        now = await asyncio.wait_for(live.Follow(path, None).start(), 2.0)
        assert now.next_offset == offsets.encode(2)
        # At the start of the feed's latest read: that read, again.
        repeat = await asyncio.wait_for(live.Follow(path, 1).start(), 2.0)
        assert (repeat.body, repeat.next_offset) == (b"b", offsets.encode(2))
        # Anywhere else: a query, held by the lock.
        elsewhere = asyncio.create_task(live.Follow(path, 0).start())
        await asyncio.sleep(0.3)
        assert not elsewhere.done()
    finally:
        await blocker.rollback()
    assert (await asyncio.wait_for(elsewhere, WAIT)).body == b"ab"
    # And the reader that started without a query sees the next commit.
    async with again:
        events = aiter(again)
        assert (await asyncio.wait_for(anext(events), WAIT)).units == 0
        await append(path, "c")
        assert (await asyncio.wait_for(anext(events), WAIT)).body == b"c"
    assert (await asyncio.wait_for(pending, WAIT)).body == b"c"
    await follow.aclose()


async def test_a_commit_not_yet_notified_reaches_a_reader_that_started_from_the_known_tail(
    cleanup,
):
    path = name()
    await create(path)
    follow, feed, pending = await follower_at_tail(path)
    stream_id = feed.stream_id
    # A commit whose notification is still on its way: the row and the data,
    # no pg_notify yet.
    await sync_to_async(Segment.objects.create)(stream_id=stream_id, start=2, end=3, data=b"c")
    await sync_to_async(Stream.objects.filter(id=stream_id).update)(tail=3)
    again = live.Follow(path, 2, until=time.monotonic() + WAIT)
    first = await again.start()
    assert (first.units, first.next_offset) == (0, offsets.encode(2))  # as notified so far
    async with again:
        events = aiter(again)
        await anext(events)
        nxt = asyncio.create_task(anext(events))
        await asyncio.sleep(0.2)
        assert not nxt.done()
        await sync_to_async(notify)(stream_id)
        assert (await asyncio.wait_for(nxt, WAIT)).body == b"c"
    assert (await asyncio.wait_for(pending, WAIT)).body == b"c"
    await follow.aclose()


def notify(stream_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [ds_settings.NOTIFY_CHANNEL, str(stream_id)])


async def test_a_commit_notified_since_the_tail_was_read_is_read(cleanup):
    path = name()
    await create(path)
    follow, feed, pending = await follower_at_tail(path)
    version = feed.version
    await append(path, "c")

    async def woken() -> bool:
        return feed.version > version

    await until(woken, "the feed to be woken")
    first = await live.Follow(path, 2).start()
    assert first.body == b"c"
    assert (await asyncio.wait_for(pending, WAIT)).body == b"c"
    await follow.aclose()


async def test_a_stream_that_can_expire_is_read_every_time(cleanup, sessions):
    path = name()
    await create(path, ttl_seconds=3600)
    follow, _, pending = await follower_at_tail(path)
    blocker = await sessions()
    try:
        await blocker.execute(stream_lock_sql())
        start = asyncio.create_task(live.Follow(path, 2).start())
        await asyncio.sleep(0.3)
        assert not start.done()  # it queries the row (and slides the TTL)
    finally:
        await blocker.rollback()
    assert (await asyncio.wait_for(start, WAIT)).next_offset == offsets.encode(2)
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending
    await follow.aclose()


async def test_readers_coming_back_behind_a_followed_tail_share_one_read(cleanup, sessions):
    path = name()
    await create(path)
    follow, _, pending = await follower_at_tail(path)
    blocker = await sessions()
    monitor = await sessions(autocommit=True)
    await blocker.execute(segments_lock_sql())
    # Two readers come back at offset 0, a read the feed does not know: the
    # second takes the first one's read, in flight since the latest wake.
    first = asyncio.create_task(live.Follow(path, 0).start())
    await until(lambda: lock_waits(monitor, "relation"), "the first read to wait")
    second = asyncio.create_task(live.Follow(path, 0).start())
    await asyncio.sleep(0.3)
    assert await lock_waits(monitor, "relation") == 1
    await blocker.rollback()
    results = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
    assert results[0] is results[1] and results[0].body == b"ab"
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending
    await follow.aclose()
