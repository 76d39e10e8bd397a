"""Group commit through real Postgres: batches no larger than
GROUP_COMMIT_MAX_BATCH, and a batch the database rejects failing only the
request at fault."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from django.conf import settings
from django.test import override_settings

from durable_streams import api, content, storage
from durable_streams.storage.groupcommit import GroupCommitter

from ..support import close_executor_connections, unique

# The committer writes on the event loop's own connections: committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

CT = "text/plain"


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


@pytest.fixture
async def db():
    """An autocommit connection of the test's own, beside the committer's pool."""
    conn = await psycopg.AsyncConnection.connect(**storage.connection_params(), autocommit=True)
    yield conn
    await conn.close()
    await asyncio.to_thread(close_executor_connections)


async def stream_id(path: str) -> int:
    return (await api.ahead(path)).id


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


async def test_a_batch_holds_at_most_max_batch_appends(db):
    path = unique()
    await api.acreate_stream(path, content_type=CT)
    stream = await stream_id(path)
    committer = GroupCommitter()

    async def ten_appends():
        # All ten queue before the first batch starts.
        return await asyncio.gather(
            *(committer.append(request(path, b"%d;" % i)) for i in range(10))
        )

    with group_commit(inflight=1, max_batch=3):
        results, commits = await notifications_during(db, stream, ten_appends)
    # One notification per committed batch: 3 + 3 + 3 + 1.
    assert commits == 4
    assert [r.next_position for r in results] == [2 * (i + 1) for i in range(10)]
    assert (await api.aread(path)).body == b"".join(b"%d;" % i for i in range(10))
    with group_commit(inflight=1, max_batch=256):
        _, commits = await notifications_during(db, stream, ten_appends)
    assert commits == 1  # the same ten appends, one transaction


async def test_a_batch_the_database_rejects_fails_only_the_request_at_fault(db):
    path = unique()
    await api.acreate_stream(path, content_type=CT)
    stream = await stream_id(path)
    # A real database error validation cannot foresee: a trigger refusing one body.
    await db.execute(
        "CREATE FUNCTION ds_test_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF position('\\x706f69736f6e'::bytea IN NEW.data) > 0 AND NEW.stream_id = "
        f"{stream} THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER ds_test_refuse_poison BEFORE INSERT OR UPDATE ON durable_streams_segment"
        " FOR EACH ROW EXECUTE FUNCTION ds_test_refuse_poison()"
    )
    committer = GroupCommitter()
    try:
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
    finally:
        await db.execute("DROP TRIGGER ds_test_refuse_poison ON durable_streams_segment")
        await db.execute("DROP FUNCTION ds_test_refuse_poison()")
    first, poisoned, last = outcomes
    assert isinstance(poisoned, psycopg.Error) and "poison refused" in str(poisoned)
    assert isinstance(alone[0], psycopg.Error)
    assert (first.next_position, last.next_position, after.next_position) == (2, 4, 6)
    assert (await api.aread(path)).body == b"a;b;c;"
