"""Snapshots publish the current rows; reset-then-snapshot rebuilds a stream."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from durable_streams import state
from durable_streams.state import emission
from tests.stateapp.models import ROOMS_STREAM, Audit, Flag, Member, Message, Room
from tests.stateapp.support import (
    changes,
    expected_flags,
    expected_room_stream,
    expected_rooms,
    materialized,
    room_stream,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_state")]


def _room_stream(room: Room) -> str:
    return room_stream(Message(room=room))


def _materialized_room(room: Room) -> dict:
    got = materialized(_room_stream(room))
    return {t: got.get_type(t) for t in ("message", "member")}


def _raw_delete(table: str, pk) -> None:
    # Behind the hooks' back, as raw SQL is.
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [pk])


def test_a_snapshot_is_start_one_insert_per_row_end():
    room = Room.objects.create(name="r")
    messages = [Message.objects.create(room=room, author="a", body=str(n)) for n in range(2)]
    member = Member.objects.create(room=room, user="u")
    other = Room.objects.create(name="other")
    Message.objects.create(room=other, author="a", body="elsewhere")
    before = len(changes(_room_stream(room)))
    result = state.snapshot(_room_stream(room))
    assert (result.stream, result.rows, result.reset) == (_room_stream(room), 3, False)
    assert changes(_room_stream(room))[before:] == [
        ("snapshot-start", "", ""),
        *[("insert", "message", str(m.pk)) for m in messages],
        ("insert", "member", str(member.uid)),
        ("snapshot-end", "", ""),
    ]
    assert _materialized_room(room) == expected_room_stream(room.pk)


def test_reset_then_snapshot_rebuilds_a_stream_that_missed_changes():
    room = Room.objects.create(name="r")
    gone = Message.objects.create(room=room, author="a", body="deleted by raw SQL")
    Message.objects.create(room=room, author="a", body="kept")
    _raw_delete("stateapp_message", gone.pk)
    state.snapshot(_room_stream(room))
    # A plain snapshot re-sends current rows but cannot retract the lost one.
    assert str(gone.pk) in materialized(_room_stream(room)).get_type("message")
    result = state.snapshot(_room_stream(room), reset=True)
    assert result.reset and result.rows == 1
    assert changes(_room_stream(room))[-4:-2] == [("reset", "", ""), ("snapshot-start", "", "")]
    assert _materialized_room(room) == expected_room_stream(room.pk)


def test_snapshot_of_an_empty_or_new_stream_creates_it():
    result = state.snapshot("flags")
    assert result.rows == 0
    assert changes("flags") == [("snapshot-start", "", ""), ("snapshot-end", "", "")]


def test_snapshot_limited_to_some_models():
    room = Room.objects.create(name="r")
    Message.objects.create(room=room, author="a", body="m")
    Member.objects.create(room=room, user="u")
    result = state.snapshot(_room_stream(room), models=[Member])
    assert result.rows == 1
    assert [c[1] for c in changes(_room_stream(room))[-2:]] == ["member", ""]
    with pytest.raises(state.StateError, match="not registered"):
        state.snapshot("audit", models=[Audit])


def test_snapshots_append_in_chunks(monkeypatch):
    monkeypatch.setattr(emission, "APPEND_CHUNK", 2)
    with state.paused():
        Flag.objects.bulk_create([Flag(slug=f"f{n}") for n in range(5)])
    assert state.snapshot("flags").rows == 5
    assert materialized("flags").get_type("flag") == expected_flags()


def test_stream_paths_and_snapshot_all_cover_every_stream_of_every_model():
    rooms = [Room.objects.create(name=str(n)) for n in range(2)]
    Message.objects.create(room=rooms[0], author="a", body="x")
    Member.objects.create(room=rooms[1], user="u")
    Flag.objects.create(slug="f")
    paths = state.stream_paths()
    assert paths == sorted([ROOMS_STREAM, "flags", *(_room_stream(r) for r in rooms)])
    assert state.stream_paths([Flag]) == ["flags"]
    results = state.snapshot_all(reset=True)
    assert [r.stream for r in results] == paths
    assert materialized(ROOMS_STREAM).get_type("room") == expected_rooms()
    assert materialized("flags").get_type("flag") == expected_flags()
    for room in rooms:
        assert _materialized_room(room) == expected_room_stream(room.pk)


def test_the_snapshot_command_snapshots_every_stream_or_the_ones_named():
    room = Room.objects.create(name="r")
    Message.objects.create(room=room, author="a", body="x")
    out = StringIO()
    call_command("streams", "snapshot", stdout=out)
    assert out.getvalue().splitlines() == [
        f"{_room_stream(room)}: 1 rows",
        f"{ROOMS_STREAM}: 1 rows",
        "flags: 0 rows",  # fixed streams are snapshotted even when empty
    ]
    out = StringIO()
    call_command("streams", "snapshot", "--reset", ROOMS_STREAM, stdout=out)
    assert out.getvalue().splitlines() == [f"{ROOMS_STREAM}: 1 rows after a reset"]
    assert changes(ROOMS_STREAM)[-4][0] == "reset"
    out = StringIO()
    written = len(changes("flags"))
    call_command("streams", "snapshot", "--model", "stateapp.Flag", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == ["flags"]
    assert len(changes("flags")) == written


def test_the_snapshot_command_refuses_unknown_or_unstreamed_models():
    with pytest.raises(CommandError, match="unknown model"):
        call_command("streams", "snapshot", "--model", "stateapp.Nope")
    with pytest.raises(CommandError, match="not registered"):
        call_command("streams", "snapshot", "--model", "stateapp.Audit")


def test_catch_up_resumes_from_the_offset_it_reached():
    Room.objects.create(name="1")
    got = state.catch_up(ROOMS_STREAM)
    assert got.up_to_date and len(got) == 1
    offset = got.offset
    Room.objects.create(name="2")
    state.catch_up(ROOMS_STREAM, got)
    assert got.offset > offset
    assert got.get_type("room") == expected_rooms()
    assert state.materialize(ROOMS_STREAM).get_type("room") == expected_rooms()
