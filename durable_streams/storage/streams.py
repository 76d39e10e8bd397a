"""The stream row: finding, locking, checking and removing streams.

These are the building blocks every write and read starts from. Writes lock
the stream row (``SELECT ... FOR UPDATE``) for their whole transaction, so
offsets are minted, producer state is checked and ``pg_notify`` is issued
under that lock, and readers are only woken once a change is committed.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from ..conf import ds_settings
from ..exceptions import BadRequest, Gone, NotFound
from . import forks
from .drivers import Op, Q, run_async, run_sync
from .schema import COLUMNS, PRODUCER, SEGMENT, STREAM
from .types import StreamMeta

# Paths are indexed; Postgres refuses index entries past ~2.7 kB.
MAX_PATH_BYTES = 1024


class StreamPath(str):
    """A path that passed :func:`check_path`; checking it again costs nothing."""

    __slots__ = ()


def check_path(path: str) -> StreamPath:
    """Return ``path`` as a :class:`StreamPath`; raise 400 for a path no stream may have.

    The view checks a request's path once, before access control, and hands the
    checked path on: storage's own check then sees a ``StreamPath`` and returns it.
    """
    if type(path) is StreamPath:
        return path
    if not path:
        raise BadRequest("empty stream path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadRequest(f"stream path is longer than {MAX_PATH_BYTES} bytes")
    if "\x00" in path or any(seg in (".", "..") for seg in path.split("/")):
        raise BadRequest("invalid stream path")
    return StreamPath(path)


def fetch(path: str, *, lock: bool) -> Op[StreamMeta | None]:
    """The row at ``path`` as it is (expired or deleted included)."""
    sql = f"SELECT {COLUMNS} FROM {STREAM} WHERE path = %s"
    row = yield Q(sql + (" FOR UPDATE" if lock else ""), [path], "one")
    return StreamMeta.from_row(row) if row else None


def notify(stream_id: int) -> Op[None]:
    """Wake the stream's live readers, in every process."""
    # Delivered by Postgres only when the surrounding transaction commits.
    yield Q("SELECT pg_notify(%s, %s)", [ds_settings.NOTIFY_CHANNEL, str(stream_id)])


def _has_forks(stream_id: int) -> Op[bool]:
    row = yield Q(
        f"SELECT EXISTS (SELECT 1 FROM {STREAM} WHERE forked_from_id = %s)", [stream_id], "one"
    )
    return row[0]


def remove(meta: StreamMeta, now: dt.datetime) -> Op[None]:
    """Delete a stream (spec 5.4): soft if forks still read its data, else for
    good, then collect soft-deleted sources no fork needs any more (4.2)."""
    if (yield from _has_forks(meta.id)):
        yield Q(
            f"UPDATE {STREAM} SET deleted_at = %s WHERE id = %s AND deleted_at IS NULL",
            [now, meta.id],
        )
        yield Q(f"DELETE FROM {PRODUCER} WHERE stream_id = %s", [meta.id])
        yield from notify(meta.id)
        return
    stream_id, source_id = meta.id, meta.forked_from_id
    while True:
        yield from _purge(stream_id)
        if source_id is None:
            return
        # Lock the source so a concurrent fork of it cannot slip in between.
        row = yield Q(
            f"SELECT deleted_at, forked_from_id FROM {STREAM} WHERE id = %s FOR UPDATE",
            [source_id],
            "one",
        )
        if row is None or row[0] is None or (yield from _has_forks(source_id)):
            return
        stream_id, source_id = source_id, row[1]


def _purge(stream_id: int) -> Op[None]:
    """Remove a stream and everything stored for it."""
    yield Q(f"DELETE FROM {SEGMENT} WHERE stream_id = %s", [stream_id])
    yield Q(f"DELETE FROM {PRODUCER} WHERE stream_id = %s", [stream_id])
    yield Q(f"DELETE FROM {STREAM} WHERE id = %s", [stream_id])
    forks.forget(stream_id)
    yield from notify(stream_id)


def live(meta: StreamMeta | None, now: dt.datetime) -> Op[StreamMeta | None]:
    """``meta`` unless it is expired; expired streams are removed (locked callers
    only). One that forks still read is soft-deleted instead, so it answers 410."""
    if meta is not None and meta.deleted_at is None and meta.is_expired(now):
        yield from remove(meta, now)
        row = yield Q(f"SELECT {COLUMNS} FROM {STREAM} WHERE id = %s", [meta.id], "one")
        return StreamMeta.from_row(row) if row else None
    return meta


def require_locked(path: str, now: dt.datetime) -> Op[StreamMeta]:
    """Lock the stream at ``path``; 404 if missing or expired, 410 if deleted."""
    meta = yield from live((yield from fetch(path, lock=True)), now)
    if meta is None:
        raise NotFound("stream not found")
    if meta.deleted_at is not None:
        raise Gone("stream was deleted")
    return meta


def _get_stream(path: str) -> Op[StreamMeta | None]:
    meta = yield from fetch(path, lock=False)
    if meta is not None and meta.deleted_at is None and meta.is_expired():
        return None
    return meta


def require(path: str) -> Op[StreamMeta]:
    """The stream at ``path``, unlocked; 400 for a bad path, 404 if missing or
    expired, 410 if deleted."""
    path = check_path(path)
    meta = yield from _get_stream(path)
    if meta is None:
        raise NotFound("stream not found")
    if meta.deleted_at is not None:
        raise Gone("stream was deleted")
    return meta


def get_stream(path: str) -> StreamMeta | None:
    """The stream at ``path``, or None if there is none or it has expired.

    Soft-deleted streams are returned; callers answer 410 for them. Expired
    streams are removed later, by the next write or ``streams expire``.
    """
    return run_sync(_get_stream(path))


def require_stream(path: str) -> StreamMeta:
    """Like :func:`get_stream`, raising 404/410 instead of returning None."""
    return run_sync(require(path))


async def arequire_stream(path: str) -> StreamMeta:
    """:func:`require_stream` on the event loop's pool."""
    return await run_async(require(path))


def _delete_stream(path: str) -> Op[None]:
    now = timezone.now()
    yield from remove((yield from require_locked(path, now)), now)


def delete_stream(path: str) -> None:
    """Delete a stream and its data (spec 5.4); soft-delete it while forks
    still read it, and collect sources that no fork needs any more."""
    run_sync(_delete_stream(path), atomic=True)


async def adelete_stream(path: str) -> None:
    """:func:`delete_stream` on the event loop's pool."""
    await run_async(_delete_stream(path), atomic=True)
