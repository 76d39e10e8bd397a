"""Listing and describing streams for operators: the admin, the JSON API and
the ``streams`` command share these queries.

Everything here is cheap however much data the streams hold: sizes come from
the tail position (which counts bytes, or messages for JSON streams), never
from summing appends, and fork counts are an indexed subquery per listed row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from . import content, offsets
from .models import ProducerState, Stream
from .storage import deadline

KINDS = (("json", "JSON"), ("text", "Text"), ("binary", "Binary"))
STATES = (("open", "Open"), ("closed", "Closed"), ("deleted", "Deleted"), ("expired", "Expired"))

_JSON = Q(content_type__iexact=content.JSON) | Q(content_type__istartswith=content.JSON + ";")
_TEXT = Q(content_type__istartswith="text/")

# The deadline annotation state_q needs (the rule lives in storage.deadline).
deadline_expression = deadline.expression


def streams() -> QuerySet[Stream]:
    """Every stream row, with ``deadline``, ``fork_count`` and the source's path."""
    forks = (
        Stream.objects.filter(forked_from=OuterRef("pk"))
        .order_by()
        .values("forked_from")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Stream.objects.select_related("forked_from")
        .annotate(
            **{deadline.ANNOTATION: deadline.expression()}, fork_count=Coalesce(Subquery(forks), 0)
        )
        .order_by("path")
    )


def kind_q(kind: str) -> Q:
    if kind == "json":
        return _JSON
    if kind == "text":
        return _TEXT
    if kind == "binary":
        return ~_JSON & ~_TEXT
    raise ValueError(f"unknown kind {kind!r}")


def state_q(state: str, now: dt.datetime | None = None) -> Q:
    """Filter for a state; needs the ``deadline`` annotation of :func:`streams`."""
    now = now or timezone.now()
    expired = deadline.expired_q(now)
    live = Q(deleted_at__isnull=True) & deadline.unexpired_q(now)
    if state == "open":
        return live & Q(closed=False)
    if state == "closed":
        return live & Q(closed=True)
    if state == "deleted":
        return Q(deleted_at__isnull=False)
    if state == "expired":
        return Q(deleted_at__isnull=True) & expired
    raise ValueError(f"unknown state {state!r}")


def kind_of(stream: Stream) -> str:
    if content.is_json(stream.content_type):
        return "json"
    if content.media_type(stream.content_type).startswith("text/"):
        return "text"
    return "binary"


def state_of(stream: Stream, now: dt.datetime | None = None) -> str:
    if stream.deleted_at is not None:
        return "deleted"
    if deadline.is_past(getattr(stream, deadline.ANNOTATION, None), now or timezone.now()):
        return "expired"
    return "closed" if stream.closed else "open"


def size_bytes(stream: Stream) -> int | None:
    """Bytes from the stream's start to its tail (forks count inherited data);
    None for JSON streams, whose positions count messages, not bytes."""
    return None if content.is_json(stream.content_type) else stream.tail


def message_count(stream: Stream) -> int | None:
    """Messages in a JSON stream (inherited ones included); None otherwise."""
    return stream.tail if content.is_json(stream.content_type) else None


def stream_url(path: str) -> str | None:
    """The stream's URL path, if ``durable_streams.urls`` is mounted."""
    try:
        return reverse("durable_streams:stream", kwargs={"stream_path": path})
    except NoReverseMatch:
        return None


def describe(stream: Stream) -> dict[str, Any]:
    """The facts an operator wants about one row of :func:`streams`."""
    source = stream.forked_from
    return {
        "path": stream.path,
        "url": stream_url(stream.path),
        "content_type": stream.content_type,
        "kind": kind_of(stream),
        "state": state_of(stream),
        "closed": stream.closed,
        "tail_offset": offsets.encode(stream.tail),
        "size_bytes": size_bytes(stream),
        "message_count": message_count(stream),
        "ttl_seconds": stream.ttl_seconds,
        "expires_at": getattr(stream, deadline.ANNOTATION, None),
        "created_at": stream.created_at,
        "last_access_at": stream.last_access_at,
        "deleted_at": stream.deleted_at,
        "forked_from": source.path if source is not None else None,
        "fork_offset": None if stream.fork_offset is None else offsets.encode(stream.fork_offset),
        "fork_count": getattr(stream, "fork_count", None),
    }


def producers(stream: Stream, limit: int = 200) -> list[ProducerState]:
    """The stream's idempotent producers, most recently active first."""
    return list(ProducerState.objects.filter(stream=stream).order_by("-updated_at")[:limit])


def forks(stream: Stream, limit: int = 200) -> list[Stream]:
    """The streams forked from this one (paths in order, at most ``limit``)."""
    return list(Stream.objects.filter(forked_from=stream).order_by("path")[:limit])
