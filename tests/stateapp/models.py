"""Models of the state tests: a chat (rooms, messages, members) and feature flags.

- Rooms go to one fixed stream, ``chat/rooms``.
- Messages and members go to one stream per room, ``chat/room-<id>``: a
  multi-type stream (members are registered in apps.py with a serializer).
- Flags are keyed by slug, use their own QuerySet class, and send old values.
- A proxy (RoomProxy) and a multi-table child (Announcement) stream as their parents.
"""

import uuid

from django.db import models
from django.utils import timezone

from durable_streams import state

ROOMS_STREAM = "chat/rooms"


def room_stream(instance) -> str:
    return f"chat/room-{instance.room_id}"


def room_id_of(path: str) -> int | None:
    """The room a ``chat/room-<id>`` stream belongs to (None for other streams)."""
    prefix, _, number = path.partition("chat/room-")
    return int(number) if not prefix and number.isdigit() else None


def rows_of_room(model):
    """``rows_for_stream`` for a per-room model: the rows of the stream's room."""

    def rows(path: str):
        room_id = room_id_of(path)
        return None if room_id is None else model.objects.filter(room_id=room_id)

    return rows


@state.register(stream=ROOMS_STREAM, type="room")
class Room(models.Model):
    name = models.CharField(max_length=100)
    topic = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


@state.register(
    stream=room_stream,
    type="message",
    exclude=["internal_note"],
    old_value=True,
    rows_for_stream=lambda path: rows_of_room(Message)(path),
)
class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.CharField(max_length=50)
    body = models.TextField()
    likes = models.IntegerField(default=0)
    score = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    meta = models.JSONField(default=dict, blank=True)
    sent_at = models.DateTimeField(default=timezone.now)
    internal_note = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"{self.author}: {self.body}"


class RoomProxy(Room):
    """A proxy: it streams as a room (its own signals are connected too)."""

    class Meta:
        proxy = True


class Announcement(Message):
    """A multi-table child: its saves stream as messages (with the parent's fields)."""

    pinned = models.BooleanField(default=True)


class Member(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members")
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    user = models.CharField(max_length=50)
    role = models.CharField(max_length=20, default="member")
    joined_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.user


class FlagQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)


@state.register(stream="flags", key="slug", fields=["slug", "enabled", "rollout"], old_value=True)
class Flag(models.Model):
    slug = models.SlugField(unique=True)
    enabled = models.BooleanField(default=False)
    rollout = models.PositiveSmallIntegerField(default=0)
    # Not streamed: saving only this field emits nothing.
    last_checked = models.DateTimeField(null=True, blank=True)

    objects = FlagQuerySet.as_manager()

    def __str__(self) -> str:
        return self.slug


class Audit(models.Model):
    """Not registered: its changes never reach a stream."""

    text = models.TextField()

    def __str__(self) -> str:
        return self.text
