"""Bulk operations that Django runs without model signals are streamed too."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import F

from durable_streams import state
from durable_streams.state import emission
from tests.stateapp.models import ROOMS_STREAM, Flag, Member, Message, Room
from tests.stateapp.support import (
    changes,
    expected_flags,
    expected_room_stream,
    expected_rooms,
    materialized,
    room_stream,
    stream_events,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_state")]


def _room_stream(room: Room) -> str:
    return room_stream(Message(room=room))


def _assert_room_matches_database(room: Room) -> None:
    got = materialized(_room_stream(room))
    assert {t: got.get_type(t) for t in ("message", "member")} == expected_room_stream(room.pk)


def test_bulk_create_appends_an_insert_per_row_with_database_values():
    room = Room.objects.create(name="r")
    created = Message.objects.bulk_create(
        [Message(room=room, author="a", body=str(n), score="1.5") for n in range(5)]
    )
    assert changes(_room_stream(room)) == [("insert", "message", str(m.pk)) for m in created]
    assert stream_events(_room_stream(room))[0]["value"]["score"] == "1.50"
    _assert_room_matches_database(room)


def test_bulk_create_through_a_related_manager_and_a_custom_queryset():
    room = Room.objects.create(name="r")
    room.members.bulk_create([Member(room=room, user=u) for u in ("x", "y")])
    Flag.objects.bulk_create([Flag(slug="a", enabled=True), Flag(slug="b")])
    assert [c[0] for c in changes(_room_stream(room))] == ["insert", "insert"]
    assert materialized("flags").get_type("flag") == expected_flags()
    _assert_room_matches_database(room)


# Django's bulk_create options, by keyword and by position (objs, batch_size, ...).
IGNORE_CONFLICTS = [
    pytest.param((), {"ignore_conflicts": True}, id="keyword"),
    pytest.param((None, True), {}, id="positional"),
]
UPSERT = [
    pytest.param(
        (),
        {"update_conflicts": True, "unique_fields": ["slug"], "update_fields": ["rollout"]},
        id="keyword",
    ),
    pytest.param((None, False, True, ["rollout"], ["slug"]), {}, id="positional"),
]


@pytest.mark.parametrize(("args", "kwargs"), IGNORE_CONFLICTS)
def test_bulk_create_with_ignore_conflicts_is_refused_rather_than_half_reported(args, kwargs):
    Flag.objects.create(slug="taken")
    with pytest.raises(state.StateError, match="ignore_conflicts"):
        Flag.objects.bulk_create([Flag(slug="taken"), Flag(slug="free")], *args, **kwargs)
    assert not Flag.objects.filter(slug="free").exists()
    with state.paused():
        Flag.objects.bulk_create([Flag(slug="taken"), Flag(slug="free")], ignore_conflicts=True)
    assert Flag.objects.filter(slug="free").exists()


@pytest.mark.parametrize(("args", "kwargs"), UPSERT)
def test_bulk_create_upserts_report_existing_rows_as_updates_and_new_ones_as_inserts(args, kwargs):
    Flag.objects.create(slug="old", rollout=1)
    Flag.objects.bulk_create(
        [Flag(slug="old", rollout=2, enabled=True), Flag(slug="new", rollout=3)], *args, **kwargs
    )
    assert changes("flags")[1:] == [("update", "flag", "old"), ("insert", "flag", "new")]
    got = materialized("flags").get_type("flag")
    assert got == expected_flags()
    assert got["old"] == {"slug": "old", "enabled": False, "rollout": 2}  # enabled not updated


def test_bulk_update_appends_updates_with_the_stored_rows():
    room = Room.objects.create(name="r")
    messages = [Message.objects.create(room=room, author="a", body=str(n)) for n in range(3)]
    for message in messages:
        message.body += "!"
        message.author = "not written"
    assert Message.objects.bulk_update(messages, ["body"], batch_size=2) == 3
    updates = [
        e for e in stream_events(_room_stream(room)) if e["headers"]["operation"] == "update"
    ]
    assert [(e["old_value"]["body"], e["value"]["body"]) for e in updates] == [
        ("0", "0!"),
        ("1", "1!"),
        ("2", "2!"),
    ]
    assert {e["value"]["author"] for e in updates} == {"a"}
    _assert_room_matches_database(room)


def test_bulk_update_of_unstreamed_fields_emits_nothing():
    flags = [Flag.objects.create(slug=s) for s in ("a", "b")]
    Flag.objects.bulk_update(flags, ["last_checked"])
    assert [c[0] for c in changes("flags")] == ["insert", "insert"]


def test_queryset_update_appends_an_update_per_matched_row():
    room, other = Room.objects.create(name="r"), Room.objects.create(name="o")
    for n in range(4):
        Message.objects.create(room=room, author="a", body=str(n), likes=n)
    Message.objects.create(room=other, author="a", body="x")
    count = Message.objects.filter(room=room, likes__gte=2).update(likes=F("likes") * 10)
    assert count == 2
    updates = [
        e for e in stream_events(_room_stream(room)) if e["headers"]["operation"] == "update"
    ]
    assert sorted((e["old_value"]["likes"], e["value"]["likes"]) for e in updates) == [
        (2, 20),
        (3, 30),
    ]
    assert [c[0] for c in changes(_room_stream(other))] == ["insert"]
    _assert_room_matches_database(room)


def test_queryset_update_that_matches_nothing_or_only_unstreamed_fields_emits_nothing():
    assert Message.objects.filter(body="nothing").update(body="x") == 0
    Flag.objects.create(slug="a")
    assert Flag.objects.update(last_checked=None) == 1
    assert changes("flags") == [("insert", "flag", "a")]


def test_update_through_a_related_manager_and_a_custom_queryset_method():
    room = Room.objects.create(name="r")
    Message.objects.create(room=room, author="a", body="x")
    room.messages.update(body="edited")
    Flag.objects.create(slug="on", enabled=True)
    Flag.objects.create(slug="off")
    Flag.objects.enabled().update(rollout=100)
    assert stream_events(_room_stream(room))[-1]["value"]["body"] == "edited"
    assert changes("flags")[-1] == ("update", "flag", "on")
    assert materialized("flags").get_type("flag") == expected_flags()


def test_update_that_moves_rows_between_streams_deletes_there_and_inserts_here():
    first, second = Room.objects.create(name="1"), Room.objects.create(name="2")
    moved = [Message.objects.create(room=first, author="a", body=str(n)) for n in range(2)]
    Message.objects.filter(room=first).update(room=second)
    assert changes(_room_stream(first))[-2:] == [("delete", "message", str(m.pk)) for m in moved]
    assert changes(_room_stream(second)) == [("insert", "message", str(m.pk)) for m in moved]
    _assert_room_matches_database(first)
    _assert_room_matches_database(second)


def test_queryset_delete_appends_deletes_including_cascades_in_every_stream():
    keep, doomed = Room.objects.create(name="keep"), Room.objects.create(name="doomed")
    Message.objects.create(room=doomed, author="a", body="x")
    Member.objects.create(room=doomed, user="u")
    Message.objects.create(room=keep, author="a", body="y")
    deleted, _ = Room.objects.filter(name="doomed").delete()
    assert deleted == 3
    assert changes(ROOMS_STREAM)[-1] == ("delete", "room", str(doomed.pk))
    assert sorted(c[:2] for c in changes(_room_stream(doomed))[-2:]) == [
        ("delete", "member"),
        ("delete", "message"),
    ]
    assert materialized(ROOMS_STREAM).get_type("room") == expected_rooms()
    _assert_room_matches_database(doomed)
    _assert_room_matches_database(keep)


def test_a_bulk_delete_appends_once_per_stream():
    room = Room.objects.create(name="r")
    Message.objects.bulk_create([Message(room=room, author="a", body=str(n)) for n in range(5)])
    path = _room_stream(room)
    with connection.cursor() as cursor:

        def appends() -> int:
            cursor.execute(
                "SELECT count(*) FROM durable_streams_segment s"
                " JOIN durable_streams_stream t ON t.id = s.stream_id WHERE t.path = %s",
                [path],
            )
            return cursor.fetchone()[0]

        before = appends()
        room.messages.all().delete()
        assert appends() == before + 1
    assert [c[0] for c in changes(path)[-5:]] == ["delete"] * 5


def test_bulk_operations_append_in_chunks(monkeypatch):
    monkeypatch.setattr(emission, "APPEND_CHUNK", 2)
    monkeypatch.setattr(emission, "FETCH_CHUNK", 3)
    room = Room.objects.create(name="r")
    Message.objects.bulk_create([Message(room=room, author="a", body=str(n)) for n in range(7)])
    Message.objects.filter(room=room).update(likes=1)
    assert [c[0] for c in changes(_room_stream(room))] == ["insert"] * 7 + ["update"] * 7
    _assert_room_matches_database(room)
