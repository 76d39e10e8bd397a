"""Events are written in the caller's transaction: they commit, roll back and
are ordered exactly like the rows they describe."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction

from durable_streams import api, state, storage
from durable_streams.exceptions import Conflict
from durable_streams.live import get_listener
from tests.stateapp.models import ROOMS_STREAM, Message, Room
from tests.stateapp.support import (
    changes,
    expected_room_stream,
    expected_rooms,
    materialized,
    room_stream,
    stream_events,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_state")]

WAIT = 20.0  # seconds any step of a concurrent test may take at most


class Rollback(Exception):
    pass


class Worker:
    """A thread with its own database connection, running one function."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # handed back to the test
            self.error = exc
        finally:
            connections.close_all()

    def join(self) -> object:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "worker did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def elsewhere(fn: Callable[[], object]) -> object:
    """``fn()`` on another connection, i.e. as another client sees the database."""
    return Worker(fn).join()


def test_a_rolled_back_transaction_leaves_no_event_and_no_stream():
    with pytest.raises(Rollback), transaction.atomic():
        Room.objects.create(name="never")
        raise Rollback
    assert stream_events(ROOMS_STREAM) == []
    assert not Room.objects.exists()


def test_a_savepoint_rollback_drops_exactly_the_events_of_the_savepoint():
    with transaction.atomic():
        kept = Room.objects.create(name="kept")
        room = Room.objects.create(name="with messages")
        Message.objects.create(room=room, author="a", body="kept")
        try:
            with transaction.atomic():
                Room.objects.create(name="dropped")
                kept.name = "renamed, then dropped"
                kept.save()
                Message.objects.create(room=room, author="a", body="dropped")
                raise Rollback
        except Rollback:
            pass
        Room.objects.create(name="after")
    names = [e["value"]["name"] for e in stream_events(ROOMS_STREAM)]
    assert names == ["kept", "with messages", "after"]
    assert [e["value"]["body"] for e in stream_events(room_stream(Message(room=room)))] == ["kept"]
    assert materialized(ROOMS_STREAM).get_type("room") == expected_rooms()


def test_events_are_invisible_to_other_connections_until_commit():
    with transaction.atomic():
        room = Room.objects.create(name="pending")
        assert changes(ROOMS_STREAM) == [("insert", "room", str(room.pk))]  # our own view
        assert elsewhere(lambda: changes(ROOMS_STREAM)) == []
    assert elsewhere(lambda: changes(ROOMS_STREAM)) == [("insert", "room", str(room.pk))]


def test_an_autocommit_save_commits_the_row_and_its_event_together():
    assert not connection.in_atomic_block
    api.create_stream(ROOMS_STREAM, content_type="application/json")
    api.close(ROOMS_STREAM)  # every append now fails
    with pytest.raises(Conflict, match="closed"):
        Room.objects.create(name="cannot be announced")
    # The row was rolled back with the failed append, though no atomic() was open.
    assert not Room.objects.exists()
    assert not connection.in_atomic_block


def test_commit_order_is_offset_order():
    room = Room.objects.create(name="r")
    first_appended, release_first = threading.Event(), threading.Event()
    committed: list[str] = []

    def writer(body: str, appended: threading.Event | None, release: threading.Event | None):
        def run() -> None:
            with transaction.atomic():
                Message.objects.create(room=room, author="w", body=body)
                if appended is not None:
                    appended.set()
                if release is not None:
                    assert release.wait(WAIT)
            committed.append(body)

        return run

    # "slow" appends first and holds the stream lock until it commits;
    # "fast" writes its row meanwhile, then waits for the lock at its append.
    slow = Worker(writer("slow", first_appended, release_first))
    assert first_appended.wait(WAIT)
    fast = Worker(writer("fast", None, None))
    fast.thread.join(0.3)
    release_first.set()
    slow.join()
    fast.join()
    bodies = [e["value"]["body"] for e in stream_events(room_stream(Message(room=room)))]
    assert bodies == committed == ["slow", "fast"]


def test_a_snapshot_waits_for_writers_in_flight_and_includes_what_they_commit():
    room = Room.objects.create(name="before")
    appended, release = threading.Event(), threading.Event()

    def rename() -> None:
        with transaction.atomic():
            locked = Room.objects.get(pk=room.pk)
            locked.name = "after"
            locked.save()
            appended.set()
            assert release.wait(WAIT)

    writer = Worker(rename)
    assert appended.wait(WAIT)
    snapshot = Worker(lambda: state.snapshot(ROOMS_STREAM))
    snapshot.thread.join(0.3)
    release.set()
    writer.join()
    assert snapshot.join().rows == 1
    assert changes(ROOMS_STREAM) == [
        ("insert", "room", str(room.pk)),
        ("update", "room", str(room.pk)),
        ("snapshot-start", "", ""),
        ("insert", "room", str(room.pk)),
        ("snapshot-end", "", ""),
    ]
    assert stream_events(ROOMS_STREAM)[3]["value"]["name"] == "after"
    assert materialized(ROOMS_STREAM).get_type("room") == expected_rooms()


async def test_a_live_follower_sees_each_commit_and_never_rolled_back_work():
    room = await Room.objects.acreate(name="r")
    await Message.objects.acreate(room=room, author="a", body="first")
    path = room_stream(Message(room=room))
    follower = state.afollow(path, wait=1.0)
    try:
        current = await asyncio.wait_for(anext(follower), WAIT)
        assert current.up_to_date and len(current.get_type("message")) == 1

        @sync_to_async(thread_sensitive=False)
        def write() -> None:
            try:
                with transaction.atomic():
                    Message.objects.create(room=room, author="a", body="rolled back")
                    raise Rollback
            except Rollback:
                pass
            with state.txid("live-1"):
                Message.objects.create(room=room, author="a", body="committed")
            connections.close_all()

        await write()
        for _ in range(50):  # bounded: one yield per read or per idle second
            current = await asyncio.wait_for(anext(follower), WAIT)
            if current.has_txid("live-1"):
                break
        bodies = sorted(m["body"] for m in current.list("message"))
        assert bodies == ["committed", "first"]
        assert (
            current.get_type("message")
            == (await sync_to_async(expected_room_stream)(room.pk))["message"]
        )
    finally:
        await follower.aclose()
        await get_listener().stop()
        await storage.close_pool()
