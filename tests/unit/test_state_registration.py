"""Registering models: options are checked when the model is registered."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from durable_streams import state
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


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"stream": ""}, "stream must be"),
        ({"stream": 5}, "stream must be"),
        ({"stream": "audit", "type": ""}, "type must be"),
        ({"stream": "audit", "key": "nope"}, "has no field 'nope'"),
        ({"stream": "audit", "key": 3}, "key must be"),
        ({"stream": "audit", "fields": ["text", "nope"]}, "has no field 'nope'"),
        ({"stream": "audit", "fields": "text"}, "list of names"),
        ({"stream": "audit", "exclude": ["nope"]}, "has no field 'nope'"),
        ({"stream": "audit", "exclude": ["id", "text"]}, "no fields left"),
        ({"stream": "audit", "fields": ["text"], "to_value": dict}, "give one of"),
    ],
)
def test_bad_options_are_refused_at_registration(options, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        state.register(Audit, **options)
    assert state.registrations(Audit) == []


def test_relations_that_change_without_a_save_cannot_be_streamed():
    # Room.messages is a reverse relation: adding a message never saves the room.
    with pytest.raises(ImproperlyConfigured, match="not a concrete field"):
        state.register(Room, stream="elsewhere", fields=["name", "messages"])


def test_the_same_type_twice_into_one_stream_is_refused():
    with pytest.raises(ImproperlyConfigured, match="already streamed"):
        state.register(Room, stream=ROOMS_STREAM, type="room")
    assert len(state.registrations(Room)) == 1


def test_registrations_default_to_the_model_name_and_every_concrete_field():
    (room,) = state.registrations(Room)
    assert room.type == "room"
    assert [f.name for f in room._fields] == ["id", "name", "topic", "created_at"]
    (message,) = state.registrations(Message)
    assert "internal_note" not in [f.name for f in message._fields]
    assert message.fixed_stream is None and message.needs_before
    (flag,) = state.registrations(Flag)
    assert flag.needs_before  # keyed by slug: a renamed slug is a delete and an insert
    assert flag.affected_by(["enabled"]) and not flag.affected_by(["last_checked"])
    (member,) = state.registrations(Member)
    assert member.affected_by(["anything"])  # a serializer may read any field


def test_registration_installs_streamed_querysets_on_every_manager():
    assert isinstance(Room.objects.all(), state.StreamedQuerySet)
    assert isinstance(Flag.objects.enabled(), state.StreamedQuerySet)  # custom QuerySet kept
    room = Room(pk=1)
    assert isinstance(room.messages.all(), state.StreamedQuerySet)
    assert not isinstance(Audit.objects.all(), state.StreamedQuerySet)
    # Subclasses of a registered model, defined after it was registered.
    assert isinstance(RoomProxy.objects.all(), state.StreamedQuerySet)
    assert isinstance(Announcement.objects.all(), state.StreamedQuerySet)


class _ElsewhereRouter:
    def db_for_write(self, model, **hints):
        return "archive" if model._meta.app_label == "stateapp" else None


def test_a_streamed_model_written_to_another_database_fails_the_system_check(settings):
    from durable_streams.checks import check_streamed_models

    assert check_streamed_models() == []
    settings.DATABASE_ROUTERS = [f"{__name__}._ElsewhereRouter"]
    errors = check_streamed_models()
    assert {e.obj for e in errors} == {Room, Message, Member, Flag}
    assert {e.id for e in errors} == {"durable_streams.E020"}
    assert "written to database 'archive'" in errors[0].msg
