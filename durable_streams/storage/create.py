"""Creating streams (spec 5.1), forks included (spec 4.2)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from ..content import DEFAULT_CONTENT_TYPE, Payload, same_type
from ..exceptions import BadRequest, Conflict, NotFound
from . import forks, streams
from .appends import insert_segments
from .drivers import Op, Q, run_async, run_sync
from .schema import COLUMNS, SEGMENT, STREAM
from .types import ForkSpec, StreamMeta


def _resolve_fork(fork: ForkSpec, now: dt.datetime) -> Op[tuple[StreamMeta, int]]:
    """Lock the fork's source and return it with the fork position."""
    source = yield from streams.live((yield from streams.fetch(fork.source_path, lock=True)), now)
    if source is None:
        raise NotFound("fork source stream not found")
    if source.deleted_at is not None:
        raise Conflict("fork source stream was deleted")
    anchor = source.tail if fork.offset is None else fork.offset
    if anchor > source.tail:
        raise BadRequest("Stream-Fork-Offset is beyond the source's tail")
    if not fork.sub_offset:
        return source, anchor
    # The sub-offset counts units into the data that starts at the anchor and
    # may not run past the end of that append (or of an inherited slice of it).
    for stream_id, lo, hi in (yield from forks.layers(source)):
        if lo <= anchor < hi:
            row = yield Q(
                f'SELECT "end" FROM {SEGMENT} WHERE stream_id = %s AND "end" > %s'
                f' AND start <= %s ORDER BY "end" LIMIT 1',
                [stream_id, anchor, anchor],
                "one",
            )
            if row and anchor + fork.sub_offset <= min(row[0], hi):
                return source, anchor + fork.sub_offset
            break
    raise BadRequest("Stream-Fork-Sub-Offset is past the next data boundary")


def _create_stream(
    path: str,
    content_type: str | None,
    ttl_seconds: int | None,
    expires_at: dt.datetime | None,
    closed: bool,
    payload: Payload | None,
    fork: ForkSpec | None,
) -> Op[tuple[bool, StreamMeta]]:
    path = streams.check_path(path)
    now = timezone.now()
    existing = yield from streams.live((yield from streams.fetch(path, lock=True)), now)
    source_id = fork_offset = None
    if fork is not None:
        source, fork_offset = yield from _resolve_fork(fork, now)
        source_id = source.id
        if content_type is None:
            content_type = source.content_type
        elif not same_type(content_type, source.content_type):
            raise Conflict("Content-Type does not match the fork source")
        if ttl_seconds is None and expires_at is None:
            # Inherit the source's expiry (spec 4.2 table).
            ttl_seconds, expires_at = source.ttl_seconds, source.expires_at
    elif content_type is None:
        content_type = DEFAULT_CONTENT_TYPE
    if existing is None:
        tail = fork_offset or 0
        row = yield Q(
            f"INSERT INTO {STREAM} (path, content_type, ttl_seconds, expires_at, closed,"
            " tail, created_at, last_access_at, forked_from_id, fork_offset)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (path) DO NOTHING RETURNING {COLUMNS}",
            [
                path,
                content_type,
                ttl_seconds,
                expires_at,
                closed,
                tail,
                now,
                now,
                source_id,
                fork_offset,
            ],
            "one",
        )
        if row is None:
            # A concurrent PUT created it first; compare with its config.
            existing = yield from streams.fetch(path, lock=True)
        else:
            meta = StreamMeta.from_row(row)
            if payload is not None and payload.units:
                yield insert_segments(meta.id, [(tail, payload)])
                row = yield Q(
                    f"UPDATE {STREAM} SET tail = %s WHERE id = %s RETURNING {COLUMNS}",
                    [tail + payload.units, meta.id],
                    "one",
                )
                meta = StreamMeta.from_row(row)
            return True, meta
    assert existing is not None
    if existing.deleted_at is not None:
        raise Conflict("a deleted stream with live forks still holds this path")
    if not (
        same_type(existing.content_type, content_type)
        and existing.ttl_seconds == ttl_seconds
        and existing.expires_at == expires_at
        and existing.closed == closed
        and existing.forked_from_id == source_id
        and existing.fork_offset == fork_offset
    ):
        raise Conflict("stream already exists with a different configuration")
    return False, existing


def create_stream(
    path: str,
    *,
    content_type: str | None,
    ttl_seconds: int | None = None,
    expires_at: dt.datetime | None = None,
    closed: bool = False,
    payload: Payload | None = None,
    fork: ForkSpec | None = None,
) -> tuple[bool, StreamMeta]:
    """Create a stream, or confirm an identical one exists (spec 5.1).

    With ``fork``, the stream branches from its source at the fork position
    and shares the source's offsets below it (spec 4.2); nothing is copied.
    ``content_type`` None means the source's type (forks) or the default.
    Returns ``(created, meta)``. Raises :class:`Conflict` when a stream with a
    different configuration (or closure status) already exists.
    """
    op = _create_stream(path, content_type, ttl_seconds, expires_at, closed, payload, fork)
    return run_sync(op, atomic=True)


async def acreate_stream(
    path: str,
    *,
    content_type: str | None,
    ttl_seconds: int | None = None,
    expires_at: dt.datetime | None = None,
    closed: bool = False,
    payload: Payload | None = None,
    fork: ForkSpec | None = None,
) -> tuple[bool, StreamMeta]:
    """:func:`create_stream` on the event loop's pool."""
    op = _create_stream(path, content_type, ttl_seconds, expires_at, closed, payload, fork)
    return await run_async(op, atomic=True)
