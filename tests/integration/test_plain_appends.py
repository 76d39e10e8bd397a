"""Plain appends (no producer, Stream-Seq or close) take one statement per
batch; every stream that statement leaves out still gets the full rule set.
Through the group committer and real Postgres."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from durable_streams import api, content, storage
from durable_streams.exceptions import Conflict, NotFound
from durable_streams.producers import Producer
from durable_streams.storage.groupcommit import GroupCommitter

from ..support import close_executor_connections, unique

pytestmark = pytest.mark.django_db(transaction=True)

JSON = "application/json"


def plain(path: str, data: bytes, content_type: str = "text/plain") -> storage.AppendRequest:
    return storage.AppendRequest(path, content_type, content.Payload.raw(data))


async def test_one_batch_answers_each_stream_by_its_own_rules():
    open_a, open_b, closed, expired, spelled = (unique() for _ in range(5))
    for path in (open_a, open_b):
        await api.acreate_stream(path, content_type="text/plain")
    await api.acreate_stream(closed, content_type="text/plain", closed=True)
    await api.acreate_stream(
        expired, content_type="text/plain", expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    await api.acreate_stream(spelled, content_type="text/plain")
    committer = GroupCommitter()
    outcomes = await asyncio.gather(
        committer.append(plain(open_a, b"a1")),
        committer.append(plain(closed, b"x")),
        committer.append(plain(open_b, b"b1")),
        committer.append(plain(expired, b"x")),
        committer.append(plain(unique(), b"x")),  # no such stream
        committer.append(plain(spelled, b"s1", "TEXT/plain; charset=utf-8")),
        committer.append(plain(open_a, b"a2;")),
        committer.append(plain(open_b, b"x", JSON)),  # another type: this stream goes the long way
        return_exceptions=True,
    )
    a1, shut, b1, gone, missing, same_type, a2, wrong_type = outcomes
    assert (a1.next_position, a2.next_position) == (2, 5)
    assert b1.next_position == 2
    assert isinstance(shut, Conflict) and shut.headers["Stream-Closed"] == "true"
    assert isinstance(gone, NotFound) and isinstance(missing, NotFound)
    assert same_type.next_position == 2
    assert isinstance(wrong_type, Conflict)
    assert (await api.aread(open_a)).body == b"a1a2;"
    assert (await api.aread(open_b)).body == b"b1"
    assert (await api.aread(spelled)).body == b"s1"
    assert (await api.aread(closed)).body == b""


async def test_plain_appends_keep_their_order_beside_a_producer_on_the_same_stream():
    path = unique()
    await api.acreate_stream(path, content_type="text/plain")
    committer = GroupCommitter()
    producer = Producer("p", 0, 0)
    outcomes = await asyncio.gather(
        committer.append(plain(path, b"1")),
        committer.append(
            storage.AppendRequest(path, "text/plain", content.Payload.raw(b"2"), producer=producer)
        ),
        committer.append(plain(path, b"3")),
        committer.append(
            storage.AppendRequest(path, "text/plain", content.Payload.raw(b"2"), producer=producer)
        ),
    )
    assert [o.next_position for o in outcomes] == [1, 2, 3, 3]
    assert outcomes[3].duplicate
    assert (await api.aread(path)).body == b"123"


async def test_json_messages_keep_their_boundaries_and_a_ttl_slides():
    path = unique()
    await api.acreate_stream(path, content_type=JSON, ttl_seconds=60)
    before = (await api.ahead(path)).last_access_at
    committer = GroupCommitter()
    await asyncio.gather(
        committer.append(
            storage.AppendRequest(
                path, JSON, content.parse_body(JSON, b'[{"a":1},{"b":2}]', allow_empty_json=False)
            )
        ),
        committer.append(
            storage.AppendRequest(
                path, JSON, content.parse_body(JSON, b'"c"', allow_empty_json=False)
            )
        ),
    )
    messages, _ = await asyncio.to_thread(api.read_json, path)
    assert messages == [{"a": 1}, {"b": 2}, "c"]
    assert (await api.ahead(path)).last_access_at > before
    await asyncio.to_thread(close_executor_connections)


async def test_each_stream_of_a_plain_batch_is_notified_once(pg_conn):
    paths = [unique(), unique()]
    for path in paths:
        await api.acreate_stream(path, content_type="text/plain")
    ids = {str((await api.ahead(path)).id) for path in paths}
    channel = settings.DURABLE_STREAMS.get("NOTIFY_CHANNEL", "durable_streams")
    await pg_conn.execute(f'LISTEN "{channel}"')
    committer = GroupCommitter()
    await asyncio.gather(*(committer.append(plain(p, b"x")) for p in paths * 4))
    notes = [note.payload async for note in pg_conn.notifies(timeout=1.0)]
    assert sorted(n for n in notes if n in ids) == sorted(ids)
