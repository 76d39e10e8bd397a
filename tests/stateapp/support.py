"""Helpers of the state tests: read a stream's events, and the rows they should equal."""

from __future__ import annotations

from django.db import models

from durable_streams import api, state
from durable_streams.exceptions import NotFound

from .models import ROOMS_STREAM, Flag, Member, Message, Room, room_stream


def clear_state() -> None:
    """Start from no rows of this app's models and none of their streams.

    The test app's models stream to fixed paths (``chat/rooms``, ``flags``,
    ``chat/room-<id>``), so a state test begins by emptying them, whatever ran
    before it: its assertions then cover its own rows only, in any test order.
    (In a ``django_db`` test this is rolled back with the test.)
    """
    from django.apps import apps
    from django.db import connection

    from durable_streams.models import Stream

    tables = [model._meta.db_table for model in apps.get_app_config("stateapp").get_models()]
    with connection.cursor() as cursor:
        # TRUNCATE fires no model signals: nothing streams the removal.
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    paths = Stream.objects.filter(deleted_at__isnull=True).filter(
        models.Q(path__in=[ROOMS_STREAM, "flags"]) | models.Q(path__startswith="chat/room-")
    )
    for path in paths.values_list("path", flat=True):
        api.delete(path)


def stream_events(path: str) -> list[dict]:
    """Every event of ``path`` (none if the stream does not exist)."""
    try:
        messages, _ = api.read_json(path)
    except NotFound:
        return []
    return messages


def changes(path: str) -> list[tuple[str, str, str]]:
    """``(operation or control, type, key)`` of each event of ``path``."""
    out = []
    for event in stream_events(path):
        headers = event["headers"]
        if "control" in headers:
            out.append((headers["control"], "", ""))
        else:
            out.append((headers["operation"], event["type"], event["key"]))
    return out


def expected_rooms() -> dict[str, dict]:
    """``{key: value}`` of the room entities the database holds now."""
    reg = state.registrations(Room)[0]
    return {str(r.pk): reg.value_for(r) for r in Room.objects.order_by("pk")}


def expected_room_stream(room_id: int) -> dict[str, dict[str, dict]]:
    """``{type: {key: value}}`` of what stream ``chat/room-<id>`` should hold."""
    message_reg = state.registrations(Message)[0]
    member_reg = state.registrations(Member)[0]
    return {
        "message": {
            str(m.pk): message_reg.value_for(m)
            for m in Message.objects.filter(room_id=room_id).order_by("pk")
        },
        "member": {
            str(m.uid): member_reg.value_for(m)
            for m in Member.objects.filter(room_id=room_id).order_by("pk")
        },
    }


def expected_flags() -> dict[str, dict]:
    reg = state.registrations(Flag)[0]
    return {f.slug: reg.value_for(f) for f in Flag.objects.order_by("pk")}


def materialized(path: str) -> state.MaterializedState:
    """The state a client reading ``path`` from the beginning ends with."""
    try:
        return state.catch_up(path)
    except NotFound:
        return state.MaterializedState()


__all__ = [
    "ROOMS_STREAM",
    "changes",
    "clear_state",
    "expected_flags",
    "expected_room_stream",
    "expected_rooms",
    "materialized",
    "room_stream",
    "stream_events",
]
