"""Group commit through real Postgres: batches no larger than
GROUP_COMMIT_MAX_BATCH, and a batch the database rejects failing only the
request at fault."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest
from django.conf import settings
from django.test import override_settings

from durable_streams import api, content, storage
from durable_streams.models import Segment, Stream
from durable_streams.storage.groupcommit import GroupCommitter

from ..support import lock_waits, unique

# The committer writes on the event loop's own connections: committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

CT = "text/plain"
WAIT = 20.0  # seconds any step may take at most before the test gives up


def group_commit(inflight: int, max_batch: int):
    return override_settings(
        DURABLE_STREAMS={
            **settings.DURABLE_STREAMS,
            "GROUP_COMMIT_INFLIGHT": inflight,
            "GROUP_COMMIT_MAX_BATCH": max_batch,
        }
    )


def request(path: str, data: bytes) -> storage.AppendRequest:
    return storage.AppendRequest(path, CT, content.Payload.raw(data))


async def new_stream() -> tuple[str, int]:
    """A fresh stream: its path and its row's id."""
    path = unique()
    await api.acreate_stream(path, content_type=CT)
    return path, (await api.ahead(path)).id


async def notifications_during(db, stream: int, work) -> tuple[list, int]:
    """Run ``work()``; return its result and how many notifications (commits)
    the stream's readers were sent meanwhile."""
    await db.execute(
        f'LISTEN "{settings.DURABLE_STREAMS.get("NOTIFY_CHANNEL", "durable_streams")}"'
    )
    result = await work()
    count = 0
    async for note in db.notifies(timeout=1.0):
        count += note.payload == str(stream)
    await db.execute("UNLISTEN *")
    return result, count


async def test_a_batch_holds_at_most_max_batch_appends(pg_conn):
    path, stream = await new_stream()
    committer = GroupCommitter()

    async def ten_appends():
        # All ten queue before the first batch starts.
        return await asyncio.gather(
            *(committer.append(request(path, b"%d;" % i)) for i in range(10))
        )

    with group_commit(inflight=1, max_batch=3):
        results, commits = await notifications_during(pg_conn, stream, ten_appends)
    # One notification per committed batch: 3 + 3 + 3 + 1.
    assert commits == 4
    assert [r.next_position for r in results] == [2 * (i + 1) for i in range(10)]
    assert (await api.aread(path)).body == b"".join(b"%d;" % i for i in range(10))
    with group_commit(inflight=1, max_batch=256):
        _, commits = await notifications_during(pg_conn, stream, ten_appends)
    assert commits == 1  # the same ten appends, one transaction


@contextlib.asynccontextmanager
async def poison_refused(db, stream: int):
    """A real database error validation cannot foresee: while in effect, a
    trigger refuses any segment of ``stream`` whose data holds b"poison"."""
    await db.execute(
        "CREATE FUNCTION ds_test_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF position('\\x706f69736f6e'::bytea IN NEW.data) > 0 AND NEW.stream_id = "
        f"{stream} THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER ds_test_refuse_poison BEFORE INSERT OR UPDATE ON durable_streams_segment"
        " FOR EACH ROW EXECUTE FUNCTION ds_test_refuse_poison()"
    )
    try:
        yield
    finally:
        await db.execute("DROP TRIGGER ds_test_refuse_poison ON durable_streams_segment")
        await db.execute("DROP FUNCTION ds_test_refuse_poison()")


async def test_a_batch_the_database_rejects_fails_only_the_request_at_fault(pg_conn):
    path, stream = await new_stream()
    committer = GroupCommitter()
    async with poison_refused(pg_conn, stream):
        with group_commit(inflight=1, max_batch=256):
            outcomes = await asyncio.gather(
                committer.append(request(path, b"a;")),
                committer.append(request(path, b"poison;")),
                committer.append(request(path, b"b;")),
                return_exceptions=True,
            )
            alone = await asyncio.gather(
                committer.append(request(path, b"poison")), return_exceptions=True
            )
            after = await committer.append(request(path, b"c;"))
    first, poisoned, last = outcomes
    assert isinstance(poisoned, psycopg.Error) and "poison refused" in str(poisoned)
    assert isinstance(alone[0], psycopg.Error)
    assert (first.next_position, last.next_position, after.next_position) == (2, 4, 6)
    assert (await api.aread(path)).body == b"a;b;c;"


@contextlib.asynccontextmanager
async def row_locked(db, stream: int):
    """The barrier: another session holds ``stream``'s row lock, so a batch
    appending to it blocks inside its transaction. ``await until_blocked()``
    returns once one does; leaving the block releases it."""
    locker = await psycopg.AsyncConnection.connect(**storage.connection_params())
    try:
        await locker.execute(
            f"SELECT 1 FROM {Stream._meta.db_table} WHERE id = %s FOR UPDATE", [stream]
        )

        async def until_blocked() -> None:
            for _ in range(int(WAIT / 0.05)):
                if await lock_waits(db):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("no batch blocked on the stream's row lock")

        yield until_blocked
        await locker.commit()
    finally:
        await locker.close()


async def test_appends_arriving_while_a_batch_commits_are_committed_and_acknowledged_next(pg_conn):
    path, stream = await new_stream()
    log: list[str] = []  # batches started and committed, appends acknowledged, in order

    async def watched_batch(requests):
        bodies = [bytes(r.payload.data).decode() for r in requests]
        log.append(f"start {bodies}")
        outcomes = await storage.aappend_batch(requests)
        log.append(f"commit {bodies}")
        return outcomes

    committer = GroupCommitter(watched_batch)
    visible: dict[bytes, bool] = {}

    async def visible_tail() -> int:
        cur = await pg_conn.execute(
            f'SELECT coalesce(max("end"), 0) FROM {Segment._meta.db_table} WHERE stream_id = %s',
            [stream],
        )
        return (await cur.fetchone())[0]

    async def acknowledged(body: bytes):
        result = await committer.append(request(path, body))
        log.append(f"ack {body.decode()}")
        # Acknowledged only once another session can read what it appended.
        visible[body] = await visible_tail() >= result.next_position
        return result

    with group_commit(inflight=1, max_batch=256):
        async with row_locked(pg_conn, stream) as until_blocked:
            first = asyncio.create_task(acknowledged(b"a;"))
            await until_blocked()
            assert log == ["start ['a;']"]
            later = [asyncio.create_task(acknowledged(b)) for b in (b"b;", b"c;", b"d;")]
            await asyncio.sleep(0.2)  # time to misbehave: start a batch, answer early
            assert log == ["start ['a;']"]  # queued behind the batch in flight
            assert not any(task.done() for task in [first, *later])
            assert await visible_tail() == 0
        results = await asyncio.wait_for(asyncio.gather(first, *later), WAIT)
    assert [e for e in log if not e.startswith("ack")] == [
        "start ['a;']",
        "commit ['a;']",
        "start ['b;', 'c;', 'd;']",
        "commit ['b;', 'c;', 'd;']",
    ]
    assert [e for e in log if e.startswith("ack")] == ["ack a;", "ack b;", "ack c;", "ack d;"]
    # Each append is answered after its own batch committed.
    assert log.index("ack a;") > log.index("commit ['a;']")
    assert log.index("ack b;") > log.index("commit ['b;', 'c;', 'd;']")
    assert visible == dict.fromkeys([b"a;", b"b;", b"c;", b"d;"], True)
    assert [r.next_position for r in results] == [2, 4, 6, 8]
    assert (await api.aread(path)).body == b"a;b;c;d;"


async def test_appends_queued_behind_a_failing_batch_are_committed_by_the_next(pg_conn):
    path, stream = await new_stream()
    committer = GroupCommitter()
    async with poison_refused(pg_conn, stream):
        with group_commit(inflight=1, max_batch=256):
            async with row_locked(pg_conn, stream) as until_blocked:
                # A batch of one the database rejects: the whole batch fails.
                failing = asyncio.create_task(committer.append(request(path, b"poison")))
                await until_blocked()
                queued = [
                    asyncio.create_task(committer.append(request(path, body)))
                    for body in (b"a;", b"b;")
                ]
                await asyncio.sleep(0.2)
                assert not any(task.done() for task in [failing, *queued])
            outcomes = await asyncio.wait_for(
                asyncio.gather(failing, *queued, return_exceptions=True), WAIT
            )
    failed, a, b = outcomes
    assert isinstance(failed, psycopg.Error) and "poison refused" in str(failed)
    assert (a.next_position, b.next_position) == (2, 4)
    assert (await api.aread(path)).body == b"a;b;"
