"""The in-process API joins the caller's transaction: appends are visible,
and wake readers, only when (and if) that transaction commits."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.conf import settings
from django.db import connections, transaction
from psycopg import sql

from durable_streams import api, storage
from durable_streams.conf import ds_settings
from durable_streams.exceptions import NotFound
from durable_streams.models import ProducerState, Segment
from durable_streams.producers import Producer

from ..support import database_url, read_bytes, unique

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def new_stream(data: str | None = None) -> str:
    path = unique()
    api.create_stream(path, content_type="text/plain", data=data)
    return path


def in_other_connection(fn, *args):
    """Run ``fn`` on a thread with its own database connection."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except Exception as exc:  # handed back to the test
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def listener():
    """A raw LISTEN connection on the notification channel; returns a poll function."""
    conn = psycopg.connect(database_url(settings.DATABASES["default"]), autocommit=True)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ds_settings.NOTIFY_CHANNEL)))

    def poll(timeout: float, until: str | None = None) -> list[str]:
        """Payloads received within ``timeout`` (returns early on ``until``)."""
        payloads = []
        for note in conn.notifies(timeout=timeout):
            payloads.append(note.payload)
            if note.payload == until:
                break
        return payloads

    yield poll
    conn.close()


def test_append_in_a_rolled_back_transaction_leaves_nothing():
    path = new_stream("base")
    stream_id = api.head(path).id
    with pytest.raises(Rollback), transaction.atomic():
        api.append(path, "lost", producer=Producer("p", 0, 0))
        assert read_bytes(path) == b"baselost"  # visible inside the transaction
        raise Rollback
    assert read_bytes(path) == b"base"
    assert api.head(path).tail == 4
    assert Segment.objects.filter(stream_id=stream_id).count() == 1
    assert not ProducerState.objects.filter(stream_id=stream_id).exists()
    # The producer's seq 0 was never accepted, so it is new, not a duplicate.
    assert not api.append(path, "kept", producer=Producer("p", 0, 0)).duplicate
    assert read_bytes(path) == b"basekept"


def test_savepoint_rollback_drops_only_its_own_append():
    path = new_stream()
    with transaction.atomic():
        first = api.append(path, "A")
        with pytest.raises(Rollback), transaction.atomic():
            api.append(path, "BBB")
            raise Rollback
        third = api.append(path, "C")
    assert read_bytes(path) == b"AC"
    # Offsets stay gap-free: the rolled-back append's positions are reused.
    assert (first.next_position, third.next_position) == (1, 2)
    assert api.head(path).tail == 2


def test_close_in_a_rolled_back_savepoint_leaves_the_stream_open():
    path = new_stream()
    with transaction.atomic():
        with pytest.raises(Rollback), transaction.atomic():
            api.close(path, data="final")
            raise Rollback
        api.append(path, "more")
    meta = api.head(path)
    assert not meta.closed
    assert read_bytes(path) == b"more"


def test_create_in_a_rolled_back_transaction_creates_nothing():
    path = unique()
    with pytest.raises(Rollback), transaction.atomic():
        api.create_stream(path, content_type="text/plain", data="x")
        raise Rollback
    with pytest.raises(NotFound):
        api.head(path)


def test_delete_in_a_rolled_back_transaction_keeps_the_stream():
    path = new_stream("keep")
    with pytest.raises(Rollback), transaction.atomic():
        api.delete(path)
        raise Rollback
    assert read_bytes(path) == b"keep"


def test_uncommitted_appends_are_invisible_to_other_connections():
    path = new_stream("base")
    with transaction.atomic():
        api.append(path, "pending")
        assert in_other_connection(read_bytes, path) == b"base"
        assert in_other_connection(lambda: api.head(path).tail) == 4
    assert in_other_connection(read_bytes, path) == b"basepending"


def test_an_uncommitted_append_holds_the_stream_lock_so_offsets_cannot_collide():
    path = new_stream()
    done = threading.Event()
    results = {}

    def other_append():
        try:
            results["other"] = api.append(path, "other").next_position
        finally:
            done.set()
            connections.close_all()

    with transaction.atomic():
        results["mine"] = api.append(path, "mine").next_position
        thread = threading.Thread(target=other_append)
        thread.start()
        assert not done.wait(0.5)  # blocked on the row lock until we commit
    thread.join(timeout=30)
    assert results == {"mine": 4, "other": 9}
    assert read_bytes(path) == b"mineother"


def test_readers_are_notified_only_when_the_transaction_commits(listener):
    path = new_stream()
    stream_id = str(api.head(path).id)
    listener(0.2)  # drain the create's notification, if any
    with transaction.atomic():
        api.append(path, "x")
        assert stream_id not in listener(0.3)
    assert stream_id in listener(5, until=stream_id)


def test_a_rolled_back_append_notifies_nobody(listener):
    path = new_stream()
    stream_id = str(api.head(path).id)
    listener(0.2)
    with pytest.raises(Rollback), transaction.atomic():
        api.append(path, "x")
        raise Rollback
    assert stream_id not in listener(0.5)


def test_concurrent_creates_of_one_path_create_it_exactly_once():
    path = unique()
    barrier = threading.Barrier(6)
    outcomes = []
    lock = threading.Lock()

    def create():
        try:
            barrier.wait(timeout=10)
            created, meta = storage.create_stream(path, content_type="text/plain")
            with lock:
                outcomes.append((created, meta.id))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(outcomes) == 6
    assert sorted(created for created, _ in outcomes) == [False] * 5 + [True]
    assert len({stream_id for _, stream_id in outcomes}) == 1
