"""Model saves and deletes become State Protocol events in the model's stream."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from django.core import serializers
from django.db.models import F

from durable_streams import state
from durable_streams.state import events
from tests.stateapp.models import (
    ROOMS_STREAM,
    Announcement,
    Audit,
    Flag,
    Member,
    Message,
    Room,
    RoomProxy,
)
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


def test_create_appends_an_insert_whose_value_is_the_row_as_json():
    when = dt.datetime(2025, 1, 15, 10, 30, 0, 250000, tzinfo=dt.UTC)
    room = Room.objects.create(name="lobby", created_at=when)
    message = Message.objects.create(
        room=room,
        author="ada",
        body="hi",
        score=decimal.Decimal("1.5"),
        meta={"tags": ["a"], "n": 1},
        sent_at=when,
        internal_note="never streamed",
    )
    (room_event,) = stream_events(ROOMS_STREAM)
    assert room_event["type"] == "room" and room_event["key"] == str(room.pk)
    assert room_event["value"] == {
        "id": room.pk,
        "name": "lobby",
        "topic": "",
        "created_at": "2025-01-15T10:30:00.250000Z",
    }
    assert room_event["headers"]["operation"] == "insert"
    assert "old_value" not in room_event
    (message_event,) = stream_events(room_stream(message))
    assert message_event["value"] == {
        "id": message.pk,
        "room": room.pk,
        "author": "ada",
        "body": "hi",
        "likes": 0,
        "score": "1.50",  # as the column stores it: decimal_places=2
        "meta": {"tags": ["a"], "n": 1},
        "sent_at": "2025-01-15T10:30:00.250000Z",
    }
    for event in (room_event, message_event):
        events.validate(event)
        stamp = dt.datetime.fromisoformat(event["headers"]["timestamp"])
        assert abs(stamp - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_values_from_saved_instances_equal_values_read_back_from_the_database():
    room = Room.objects.create(name="r")
    paris = dt.timezone(dt.timedelta(hours=2))
    message = Message.objects.create(
        room=room,
        author="a",
        body="b",
        score="7.1",
        likes="3",  # a string: the column stores an integer
        sent_at=dt.datetime(2025, 6, 1, 12, 0, tzinfo=paris),
    )
    emitted = stream_events(room_stream(message))[0]["value"]
    reg = state.registrations(Message)[0]
    assert emitted == reg.value_for(Message.objects.get(pk=message.pk))
    assert emitted["likes"] == 3 and emitted["score"] == "7.10"
    assert emitted["sent_at"] == "2025-06-01T10:00:00Z"


def test_save_appends_an_update_with_old_value_only_where_registered():
    room = Room.objects.create(name="before")
    room.name = "after"
    room.save()
    update = stream_events(ROOMS_STREAM)[-1]
    assert update["headers"]["operation"] == "update"
    assert update["value"]["name"] == "after"
    assert "old_value" not in update  # rooms are registered without old values

    message = Message.objects.create(room=room, author="a", body="one")
    message.body = "two"
    message.save()
    update = stream_events(room_stream(message))[-1]
    assert update["headers"]["operation"] == "update"
    assert (update["old_value"]["body"], update["value"]["body"]) == ("one", "two")


def test_delete_appends_a_delete_with_the_key_and_the_old_value():
    room = Room.objects.create(name="r")
    message = Message.objects.create(room=room, author="a", body="bye")
    key = str(message.pk)
    message.delete()
    delete = stream_events(room_stream(message))[-1]
    assert delete["type"] == "message" and delete["key"] == key
    assert delete["headers"]["operation"] == "delete"
    assert "value" not in delete
    assert delete["old_value"]["body"] == "bye"


def test_old_value_is_the_row_in_the_database_not_a_stale_instance():
    room = Room.objects.create(name="r")
    message = Message.objects.create(room=room, author="a", body="v1")
    Message.objects.filter(pk=message.pk).update(body="v2")  # behind this instance's back
    message.body = "v3"
    message.save()
    last = stream_events(room_stream(message))[-1]
    assert (last["old_value"]["body"], last["value"]["body"]) == ("v2", "v3")


def test_several_saves_of_one_row_in_a_transaction_each_append_in_order():
    room = Room.objects.create(name="r")
    message = Message.objects.create(room=room, author="a", body="0")
    for n in range(1, 4):
        message.body = str(n)
        message.save()
    bodies = [
        (e["old_value"]["body"], e["value"]["body"])
        for e in stream_events(room_stream(message))
        if e["headers"]["operation"] == "update"
    ]
    assert bodies == [("0", "1"), ("1", "2"), ("2", "3")]
    assert materialized(room_stream(message)).get("message", str(message.pk))["body"] == "3"


def test_update_fields_sends_the_row_as_stored_not_unsaved_attributes():
    room = Room.objects.create(name="r")
    message = Message.objects.create(room=room, author="ada", body="one")
    message.author = "unsaved"
    message.body = "two"
    message.save(update_fields=["body"])
    last = stream_events(room_stream(message))[-1]
    assert last["value"]["body"] == "two"
    assert last["value"]["author"] == "ada"  # not written, so not sent


def test_update_fields_outside_the_streamed_fields_emits_nothing():
    flag = Flag.objects.create(slug="beta", enabled=True)
    flag.last_checked = dt.datetime.now(dt.UTC)
    flag.save(update_fields=["last_checked"])
    assert changes("flags") == [("insert", "flag", "beta")]
    flag.rollout = 50
    flag.save(update_fields=["rollout"])
    assert changes("flags")[-1] == ("update", "flag", "beta")


def test_expressions_are_sent_as_the_values_the_database_computed():
    room = Room.objects.create(name="r")
    message = Message.objects.create(room=room, author="a", body="b", likes=1)
    message.likes = F("likes") + 41
    message.save()
    assert stream_events(room_stream(message))[-1]["value"]["likes"] == 42


def test_fixture_loading_emits_nothing():
    room = Room.objects.create(name="r")
    data = serializers.serialize("json", [Message(pk=900, room=room, author="a", body="raw")])
    for obj in serializers.deserialize("json", data):
        obj.save()  # raw=True, as loaddata saves
    assert Message.objects.filter(pk=900).exists()
    assert stream_events(room_stream(Message(room=room))) == []


def test_a_message_moved_to_another_room_leaves_one_stream_and_enters_the_other():
    first, second = Room.objects.create(name="1"), Room.objects.create(name="2")
    message = Message.objects.create(room=first, author="a", body="moving")
    message.room = second
    message.save()
    assert changes(room_stream(Message(room=first)))[-1] == ("delete", "message", str(message.pk))
    assert changes(room_stream(message)) == [("insert", "message", str(message.pk))]
    assert materialized(room_stream(Message(room=first))).get_type("message") == {}
    assert (
        materialized(room_stream(message)).get_type("message")
        == (expected_room_stream(second.pk)["message"])
    )


def test_a_changed_key_is_a_delete_of_the_old_key_and_an_insert_of_the_new():
    flag = Flag.objects.create(slug="old-name")
    flag.slug = "new-name"
    flag.save()
    assert changes("flags")[-2:] == [("delete", "flag", "old-name"), ("insert", "flag", "new-name")]
    assert materialized("flags").get_type("flag") == expected_flags()


def test_a_serializer_makes_the_value_and_a_field_the_key():
    room = Room.objects.create(name="r")
    member = Member.objects.create(room=room, user="bob", role="admin")
    (event,) = stream_events(room_stream(member))
    assert event["type"] == "member" and event["key"] == str(member.uid)
    assert event["value"]["uid"] == str(member.uid)
    assert event["value"]["room"] == room.pk and event["value"]["role"] == "admin"
    assert set(event["value"]) == {"uid", "room", "user", "role", "joined_at"}


def test_one_stream_holds_several_types():
    room = Room.objects.create(name="r")
    Member.objects.create(room=room, user="bob")
    Message.objects.create(room=room, author="bob", body="hi")
    got = materialized(room_stream(Message(room=room)))
    assert sorted(got.types) == ["member", "message"]
    assert {t: got.get_type(t) for t in got.types} == expected_room_stream(room.pk)


def test_txid_blocks_stamp_every_event_they_produce():
    with state.txid("tx-42"):
        room = Room.objects.create(name="r")
        Message.objects.create(room=room, author="a", body="b")
    Room.objects.create(name="no txid")
    rooms = stream_events(ROOMS_STREAM)
    assert rooms[0]["headers"]["txid"] == "tx-42"
    assert "txid" not in rooms[1]["headers"]
    assert stream_events(room_stream(Message(room=room)))[0]["headers"]["txid"] == "tx-42"
    assert materialized(ROOMS_STREAM).has_txid("tx-42")


def test_unregistered_models_and_paused_blocks_emit_nothing():
    Audit.objects.create(text="quiet")
    with state.paused():
        Room.objects.create(name="unpublished")
    assert stream_events(ROOMS_STREAM) == []
    result = state.snapshot(ROOMS_STREAM)  # how paused work gets published
    assert result.rows == 1
    assert materialized(ROOMS_STREAM).get_type("room") == expected_rooms()


def test_an_unregistered_model_stops_streaming(monkeypatch):
    from durable_streams.state import registration

    # Restored after the test.
    monkeypatch.setitem(registration._registry, Flag, registration._registry[Flag])
    state.unregister(Flag)
    Flag.objects.create(slug="silent")
    assert stream_events("flags") == []


def test_a_value_that_is_not_a_json_object_is_refused_with_the_change():
    bad = state.Registration(model=Audit, stream="audit", type="audit", to_value=lambda a: [1])
    with pytest.raises(state.StateError, match="must be a JSON object"):
        bad.value_for(Audit(text="x"))
    nan = state.Registration(
        model=Audit, stream="audit", type="audit", to_value=lambda a: {"x": float("nan")}
    )
    with pytest.raises(state.StateError, match="cannot be sent as JSON"):
        nan.value_for(Audit(text="x"))


def test_a_proxy_streams_as_the_model_it_proxies():
    proxied = RoomProxy.objects.create(name="through a proxy")
    proxied.name = "renamed"
    proxied.save()
    RoomProxy.objects.filter(pk=proxied.pk).update(topic="bulk")
    RoomProxy.objects.get(pk=proxied.pk).delete()
    assert [c[:2] for c in changes(ROOMS_STREAM)] == [
        ("insert", "room"),
        ("update", "room"),
        ("update", "room"),
        ("delete", "room"),
    ]
    assert materialized(ROOMS_STREAM).get_type("room") == {}


def test_a_multi_table_child_streams_as_its_parent_once_per_change():
    room = Room.objects.create(name="r")
    pinned = Announcement.objects.create(room=room, author="mod", body="rules")
    pinned.body = "new rules"
    pinned.save()
    Announcement.objects.create(room=room, author="mod", body="second")
    path = room_stream(pinned)
    assert materialized(path).get_type("message") == expected_room_stream(room.pk)["message"]
    pinned.delete()
    Announcement.objects.all().delete()
    assert [c[0] for c in changes(path)] == ["insert", "update", "insert", "delete", "delete"]
    assert materialized(path).get_type("message") == {}


def test_saving_a_new_instance_over_an_existing_primary_key_is_an_update():
    room = Room.objects.create(name="r")
    original = Message.objects.create(room=room, author="a", body="original")
    other = Room.objects.create(name="other")
    Message(pk=original.pk, room=other, author="a", body="replaced").save()
    assert changes(room_stream(original))[-1] == ("delete", "message", str(original.pk))
    (moved,) = stream_events(room_stream(Message(room=other)))
    assert moved["value"]["body"] == "replaced"


@pytest.mark.django_db(transaction=True)
def test_registered_fixed_streams_exist_from_migrate_on_and_read_as_empty():
    from django.core.management import call_command

    from durable_streams import api
    from tests.stateapp.support import clear_state

    clear_state()  # no rows and no streams: as before a project's first change
    call_command("migrate", verbosity=0)
    for path in (ROOMS_STREAM, "flags"):
        assert api.head(path).content_type == "application/json"
        assert api.read_json(path)[0] == []
    Flag.objects.create(slug="after-migrate")
    assert changes("flags") == [("insert", "flag", "after-migrate")]
