"""The data path: every read and write of stream data goes through here.

Functions are synchronous and run on the caller's Django database connection,
so they join the caller's transaction (the model change streams rely on it).
Async views reach them through :func:`durable_streams.executor.run`.

Writes lock the stream row (``SELECT ... FOR UPDATE``) for the whole append
transaction: offsets are minted under that lock, producer state is validated
and stored under it, and ``pg_notify`` is issued inside it, so readers are
only woken once the append is committed and visible.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connections, transaction
from django.utils import timezone

from . import offsets
from .conf import ds_settings
from .content import DEFAULT_CONTENT_TYPE, Payload, is_json, same_type
from .exceptions import BadRequest, Conflict, Gone, NotFound, StreamError
from .producers import Outcome, Producer, validate

_COLUMNS = (
    "id, path, content_type, ttl_seconds, expires_at, closed, tail, created_at,"
    " last_access_at, last_stream_seq, closed_by_producer, closed_by_epoch,"
    " closed_by_seq, forked_from_id, fork_offset, deleted_at"
)
_STREAM = "durable_streams_stream"
_SEGMENT = "durable_streams_segment"
_PRODUCER = "durable_streams_producer"
# Rows fetched per query while filling one read; bounded by MAX_CHUNK_SIZE too.
_READ_BATCH = 512


@dataclass(frozen=True)
class StreamMeta:
    """A snapshot of one stream's row."""

    id: int
    path: str
    content_type: str
    ttl_seconds: int | None
    expires_at: dt.datetime | None
    closed: bool
    tail: int
    created_at: dt.datetime
    last_access_at: dt.datetime
    last_stream_seq: str | None
    closed_by: tuple[str, int, int] | None
    forked_from_id: int | None
    fork_offset: int | None
    deleted_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: tuple) -> StreamMeta:
        closed_by = (row[10], row[11], row[12]) if row[10] is not None else None
        return cls(*row[:10], closed_by, *row[13:])  # type: ignore[arg-type]

    @property
    def is_json(self) -> bool:
        return is_json(self.content_type)

    @property
    def tail_offset(self) -> str:
        return offsets.encode(self.tail)

    def deadline(self) -> dt.datetime | None:
        """When the stream expires, if it does (sliding TTL or absolute)."""
        if self.ttl_seconds is not None:
            return self.last_access_at + dt.timedelta(seconds=self.ttl_seconds)
        return self.expires_at

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        deadline = self.deadline()
        return deadline is not None and deadline <= (now or timezone.now())


@dataclass(frozen=True)
class AppendResult:
    """What an append (or close) did."""

    next_position: int
    closed: bool
    # True when nothing was written: a producer retry or a repeated close.
    duplicate: bool = False
    producer_epoch: int | None = None
    producer_seq: int | None = None

    @property
    def next_offset(self) -> str:
        return offsets.encode(self.next_position)


@dataclass(frozen=True)
class ReadResult:
    """One chunk read from a stream, as its HTTP body would carry it."""

    stream: StreamMeta
    body: bytes
    start: int
    next_position: int
    # Units (bytes, or JSON messages) in ``body``.
    units: int

    @property
    def up_to_date(self) -> bool:
        return self.next_position >= self.stream.tail

    @property
    def closed(self) -> bool:
        """EOF: the stream is closed and this chunk reaches its final offset."""
        return self.stream.closed and self.up_to_date

    @property
    def next_offset(self) -> str:
        return offsets.encode(self.next_position)


def _connection():
    return connections[ds_settings.DATABASE_ALIAS]


def _atomic():
    return transaction.atomic(using=ds_settings.DATABASE_ALIAS)


def _fetch(cursor, path: str, *, lock: bool) -> StreamMeta | None:
    sql = f"SELECT {_COLUMNS} FROM {_STREAM} WHERE path = %s"
    cursor.execute(sql + (" FOR UPDATE" if lock else ""), [path])
    row = cursor.fetchone()
    return StreamMeta.from_row(row) if row else None


def _has_forks(cursor, stream_id: int) -> bool:
    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {_STREAM} WHERE forked_from_id = %s)", [stream_id])
    return cursor.fetchone()[0]


def _remove(cursor, meta: StreamMeta, now: dt.datetime) -> None:
    """Delete a stream (spec 5.4): soft if forks still read its data, else for
    good, then collect soft-deleted sources no fork needs any more (4.2)."""
    if _has_forks(cursor, meta.id):
        cursor.execute(
            f"UPDATE {_STREAM} SET deleted_at = %s WHERE id = %s AND deleted_at IS NULL",
            [now, meta.id],
        )
        cursor.execute(f"DELETE FROM {_PRODUCER} WHERE stream_id = %s", [meta.id])
        _notify(cursor, meta.id)
        return
    stream_id, source_id = meta.id, meta.forked_from_id
    while True:
        _purge(cursor, stream_id)
        if source_id is None:
            return
        # Lock the source so a concurrent fork of it cannot slip in between.
        cursor.execute(
            f"SELECT deleted_at, forked_from_id FROM {_STREAM} WHERE id = %s FOR UPDATE",
            [source_id],
        )
        row = cursor.fetchone()
        if row is None or row[0] is None or _has_forks(cursor, source_id):
            return
        stream_id, source_id = source_id, row[1]


def _purge(cursor, stream_id: int) -> None:
    """Remove a stream and everything stored for it."""
    cursor.execute(f"DELETE FROM {_SEGMENT} WHERE stream_id = %s", [stream_id])
    cursor.execute(f"DELETE FROM {_PRODUCER} WHERE stream_id = %s", [stream_id])
    cursor.execute(f"DELETE FROM {_STREAM} WHERE id = %s", [stream_id])
    _chains.pop(stream_id, None)
    _notify(cursor, stream_id)


def _notify(cursor, stream_id: int) -> None:
    # Delivered by Postgres only when the surrounding transaction commits.
    cursor.execute("SELECT pg_notify(%s, %s)", [ds_settings.NOTIFY_CHANNEL, str(stream_id)])


def _live(cursor, meta: StreamMeta | None, now: dt.datetime) -> StreamMeta | None:
    """``meta`` unless it is expired; expired streams are removed (locked callers
    only). One that forks still read is soft-deleted instead, so it answers 410."""
    if meta is not None and meta.deleted_at is None and meta.is_expired(now):
        _remove(cursor, meta, now)
        cursor.execute(f"SELECT {_COLUMNS} FROM {_STREAM} WHERE id = %s", [meta.id])
        row = cursor.fetchone()
        return StreamMeta.from_row(row) if row else None
    return meta


def _require(cursor, path: str, now: dt.datetime) -> StreamMeta:
    meta = _live(cursor, _fetch(cursor, path, lock=True), now)
    if meta is None:
        raise NotFound("stream not found")
    if meta.deleted_at is not None:
        raise Gone("stream was deleted")
    return meta


def _insert_segment(cursor, stream_id: int, start: int, payload: Payload) -> None:
    cursor.execute(
        f'INSERT INTO {_SEGMENT} (stream_id, start, "end", data, boundaries)'
        " VALUES (%s, %s, %s, %s, %s)",
        [stream_id, start, start + payload.units, payload.data, payload.boundaries],
    )


# --- metadata -------------------------------------------------------------


def get_stream(path: str) -> StreamMeta | None:
    """The stream at ``path``, or None if there is none or it has expired.

    Soft-deleted streams are returned; callers answer 410 for them.
    """
    with _connection().cursor() as cursor:
        meta = _fetch(cursor, path, lock=False)
    if meta is not None and meta.is_expired():
        with _atomic(), _connection().cursor() as cursor:
            _live(cursor, _fetch(cursor, path, lock=True), timezone.now())
        return None
    return meta


def require_stream(path: str) -> StreamMeta:
    """Like :func:`get_stream`, raising 404/410 instead of returning None."""
    meta = get_stream(path)
    if meta is None:
        raise NotFound("stream not found")
    if meta.deleted_at is not None:
        raise Gone("stream was deleted")
    return meta


# --- forks: the chain of streams a read stitches together ----------------------

# A fork's ancestry (ids and fork positions) never changes, and an ancestor's
# rows outlive every fork that reads them, so chains are cached per process.
_chains: dict[int, list[tuple[int, int | None]]] = {}
_CHAIN_CACHE_SIZE = 10_000


def _chain(meta: StreamMeta) -> list[tuple[int, int | None]]:
    """``[(stream id, fork position)]`` from ``meta`` up to its root stream."""
    if meta.forked_from_id is None:
        return [(meta.id, None)]
    chain = _chains.get(meta.id)
    if chain is None:
        with _connection().cursor() as cursor:
            cursor.execute(
                f"WITH RECURSIVE chain(id, forked_from_id, fork_offset, depth) AS ("
                f"  SELECT id, forked_from_id, fork_offset, 0 FROM {_STREAM} WHERE id = %s"
                f"  UNION ALL"
                f"  SELECT s.id, s.forked_from_id, s.fork_offset, c.depth + 1"
                f"  FROM {_STREAM} s JOIN chain c ON s.id = c.forked_from_id"
                f") SELECT id, fork_offset FROM chain ORDER BY depth",
                [meta.id],
            )
            chain = [(row[0], row[1]) for row in cursor.fetchall()]
        if len(_chains) >= _CHAIN_CACHE_SIZE:
            _chains.clear()
        _chains[meta.id] = chain
    return chain


def _layers(meta: StreamMeta, tail: int | None = None) -> list[tuple[int, int, int]]:
    """``[(stream id, lo, hi)]``: which stream stores each range of positions
    below ``tail`` (default: the stream's tail), in position order."""
    hi = meta.tail if tail is None else tail
    layers = []
    for stream_id, fork_offset in _chain(meta):
        lo = fork_offset or 0
        if lo < hi:
            layers.append((stream_id, lo, hi))
            hi = lo
    layers.reverse()
    return layers


@dataclass(frozen=True)
class ForkSpec:
    """The fork headers of a PUT (spec 4.2)."""

    source_path: str
    # None: the source's tail at creation time.
    offset: int | None = None
    sub_offset: int = 0


def _resolve_fork(cursor, fork: ForkSpec, now: dt.datetime) -> tuple[StreamMeta, int]:
    """Lock the fork's source and return it with the fork position."""
    source = _live(cursor, _fetch(cursor, fork.source_path, lock=True), now)
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
    for stream_id, lo, hi in _layers(source):
        if lo <= anchor < hi:
            cursor.execute(
                f'SELECT "end" FROM {_SEGMENT} WHERE stream_id = %s AND "end" > %s'
                f' AND start <= %s ORDER BY "end" LIMIT 1',
                [stream_id, anchor, anchor],
            )
            row = cursor.fetchone()
            if row and anchor + fork.sub_offset <= min(row[0], hi):
                return source, anchor + fork.sub_offset
            break
    raise BadRequest("Stream-Fork-Sub-Offset is past the next data boundary")


# --- create -----------------------------------------------------------------


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
    now = timezone.now()
    with _atomic(), _connection().cursor() as cursor:
        existing = _live(cursor, _fetch(cursor, path, lock=True), now)
        source_id = fork_offset = None
        if fork is not None:
            source, fork_offset = _resolve_fork(cursor, fork, now)
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
            cursor.execute(
                f"INSERT INTO {_STREAM} (path, content_type, ttl_seconds, expires_at, closed,"
                " tail, created_at, last_access_at, forked_from_id, fork_offset)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT (path) DO NOTHING RETURNING {_COLUMNS}",
                [path, content_type, ttl_seconds, expires_at, closed, tail, now, now,
                 source_id, fork_offset],
            )
            row = cursor.fetchone()
            if row is None:
                # A concurrent PUT created it first; compare with its config.
                existing = _fetch(cursor, path, lock=True)
            else:
                meta = StreamMeta.from_row(row)
                if payload is not None and payload.units:
                    _insert_segment(cursor, meta.id, tail, payload)
                    cursor.execute(
                        f"UPDATE {_STREAM} SET tail = %s WHERE id = %s RETURNING {_COLUMNS}",
                        [tail + payload.units, meta.id],
                    )
                    meta = StreamMeta.from_row(cursor.fetchone())
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


# --- append and close -----------------------------------------------------------


def append(
    path: str,
    *,
    content_type: str | None = None,
    payload: Payload | None = None,
    payload_error: StreamError | None = None,
    close: bool = False,
    stream_seq: str | None = None,
    producer: Producer | None = None,
) -> AppendResult:
    """Append ``payload`` (and/or close the stream) atomically (spec 5.2, 5.3).

    ``payload_error`` is a body that failed to parse: it is reported only after
    the checks the spec ranks above it (closure, content type).
    """
    has_body = payload is not None or payload_error is not None
    if not has_body and not close:
        raise BadRequest("empty body: nothing to append")
    now = timezone.now()
    with _atomic(), _connection().cursor() as cursor:
        meta = _require(cursor, path, now)
        if meta.closed:
            return _append_to_closed(meta, has_body=has_body, producer=producer)
        if has_body:
            if content_type is None:
                raise BadRequest("Content-Type is required with a body")
            if not same_type(content_type, meta.content_type):
                raise Conflict("Content-Type does not match the stream")
            if payload_error is not None:
                raise payload_error
        if producer is not None:
            cursor.execute(
                f"SELECT epoch, last_seq FROM {_PRODUCER} WHERE stream_id = %s AND producer_id = %s",
                [meta.id, producer.producer_id],
            )
            state = cursor.fetchone()
            if validate(state, producer) is Outcome.DUPLICATE:
                return AppendResult(
                    meta.tail, False, duplicate=True, producer_epoch=state[0], producer_seq=state[1]
                )
        if stream_seq is not None and meta.last_stream_seq is not None:
            # Byte-wise order: code point order of latin-1/UTF-8 decoded text.
            if stream_seq <= meta.last_stream_seq:
                raise Conflict("Stream-Seq must increase")
        tail = meta.tail
        if payload is not None and payload.units:
            _insert_segment(cursor, meta.id, tail, payload)
            tail += payload.units
        closer = producer if close and producer is not None else None
        cursor.execute(
            f"UPDATE {_STREAM} SET tail = %s, closed = %s, last_access_at = %s,"
            " last_stream_seq = COALESCE(%s, last_stream_seq),"
            " closed_by_producer = %s, closed_by_epoch = %s, closed_by_seq = %s"
            " WHERE id = %s",
            [
                tail,
                close,
                now,
                stream_seq,
                closer.producer_id if closer else None,
                closer.epoch if closer else None,
                closer.seq if closer else None,
                meta.id,
            ],
        )
        if producer is not None:
            cursor.execute(
                f"INSERT INTO {_PRODUCER} (stream_id, producer_id, epoch, last_seq, updated_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stream_id, producer_id) DO UPDATE"
                " SET epoch = EXCLUDED.epoch, last_seq = EXCLUDED.last_seq,"
                " updated_at = EXCLUDED.updated_at",
                [meta.id, producer.producer_id, producer.epoch, producer.seq, now],
            )
        _notify(cursor, meta.id)
    return AppendResult(
        tail,
        close,
        producer_epoch=producer.epoch if producer else None,
        producer_seq=producer.seq if producer else None,
    )


def _append_to_closed(
    meta: StreamMeta, *, has_body: bool, producer: Producer | None
) -> AppendResult:
    if producer is not None and meta.closed_by == (
        producer.producer_id,
        producer.epoch,
        producer.seq,
    ):
        # A retry of the very request that closed the stream.
        return AppendResult(
            meta.tail, True, duplicate=True, producer_epoch=producer.epoch, producer_seq=producer.seq
        )
    if not has_body:
        return AppendResult(meta.tail, True, duplicate=True)
    raise Conflict(
        "stream is closed",
        headers={"Stream-Closed": "true", "Stream-Next-Offset": meta.tail_offset},
    )


# --- read -----------------------------------------------------------------------


def read(path: str, position: int | None, *, max_bytes: int | None = None) -> ReadResult:
    """Read from ``position`` (None: the tail) up to ``max_bytes`` of body.

    Raises 404/410 for missing, expired or deleted streams and 400 for a
    position past the tail. Reading resets a sliding TTL.
    """
    budget = max_bytes or ds_settings.MAX_CHUNK_SIZE
    meta = require_stream(path)
    if meta.ttl_seconds is not None:
        with _connection().cursor() as cursor:
            cursor.execute(
                f"UPDATE {_STREAM} SET last_access_at = %s WHERE id = %s",
                [timezone.now(), meta.id],
            )
    if position is None:
        position = meta.tail
    if position > meta.tail:
        raise BadRequest("offset is beyond the end of the stream")
    pieces, units = _read_range(meta, position, budget)
    if meta.is_json:
        body = b"[" + b",".join(pieces) + b"]"
    else:
        body = b"".join(pieces)
    return ReadResult(meta, body, position, position + units, units)


def _read_range(meta: StreamMeta, position: int, budget: int) -> tuple[list[bytes], int]:
    """Pieces of stored data from ``position`` up to the tail, within ``budget``.

    A fork's positions are spread over its chain; each layer is read from the
    stream that stores it, so reading never depends on inherited data size.
    """
    pieces: list[bytes] = []
    used = 0
    pos = position
    json_mode = meta.is_json
    for stream_id, _lo, hi in _layers(meta):
        while pos < hi and used < budget:
            rows = _fetch_segments(stream_id, pos, hi, budget - used, json_mode)
            if not rows:
                return pieces, pos - position  # defensive: never spin on a gap
            for start, end, data, bounds in rows:
                end = min(end, hi)  # an ancestor's append may run past the fork point
                if json_mode:
                    piece, taken = _json_slice(
                        data, bounds, pos - start, end - start, budget - used, not pieces
                    )
                else:
                    piece = bytes(data[: min(budget - used, end - pos)])
                    taken = len(piece)
                if not taken:
                    return pieces, pos - position
                pieces.append(piece)
                used += len(piece)
                pos += taken
                if used >= budget or pos < end:
                    return pieces, pos - position
    return pieces, pos - position


def _fetch_segments(
    stream_id: int, pos: int, tail: int, budget: int, json_mode: bool
) -> list[tuple]:
    # The window sum stops the fetch once the budget is covered, so a read of
    # a huge stream never loads more rows than one chunk needs. Binary rows
    # are cut in SQL to the part the read uses.
    size = "octet_length(data)" if json_mode else '"end" - GREATEST(start, %(pos)s)'
    data = "data" if json_mode else (
        "substring(data FROM (GREATEST(%(pos)s - start, 0) + 1)::int FOR %(budget)s::int)"
    )
    sql = (
        f'SELECT start, "end", {data}, boundaries FROM ('
        f'  SELECT *, sum({size}) OVER (ORDER BY "end") - {size} AS before FROM ('
        f'    SELECT start, "end", data, boundaries FROM {_SEGMENT}'
        '     WHERE stream_id = %(id)s AND "end" > %(pos)s AND start < %(tail)s'
        f'    ORDER BY "end" LIMIT {_READ_BATCH}'
        "  ) page"
        ') windowed WHERE before < %(budget)s ORDER BY "end"'
    )
    with _connection().cursor() as cursor:
        cursor.execute(sql, {"id": stream_id, "pos": pos, "tail": tail, "budget": budget})
        return cursor.fetchall()


def _json_slice(
    data: bytes, bounds: list[int], first: int, count: int, budget: int, must_take: bool
) -> tuple[bytes, int]:
    """Messages ``first..count`` of a JSON segment that fit in ``budget`` bytes.

    Takes at least one message when ``must_take`` so a message larger than
    the chunk size is still delivered.
    """
    data = bytes(data)
    begin = bounds[first]
    last = count
    while last > first:
        stop = bounds[last] - 1 if last < len(bounds) else len(data)
        if stop - begin <= budget or (must_take and last == first + 1):
            return data[begin:stop], last - first
        last -= 1
    return b"", 0


# --- delete -------------------------------------------------------------------------


def delete_stream(path: str) -> None:
    """Delete a stream and its data (spec 5.4); soft-delete it while forks
    still read it, and collect sources that no fork needs any more."""
    with _atomic(), _connection().cursor() as cursor:
        now = timezone.now()
        _remove(cursor, _require(cursor, path, now), now)


def iter_paths(prefix: str = "") -> Iterable[str]:
    """Paths of the live streams starting with ``prefix``, in order."""
    with _connection().cursor() as cursor:
        cursor.execute(
            f"SELECT path FROM {_STREAM} WHERE deleted_at IS NULL AND starts_with(path, %s)"
            " ORDER BY path",
            [prefix],
        )
        return [row[0] for row in cursor.fetchall()]
