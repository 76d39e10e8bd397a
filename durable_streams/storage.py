"""The data path: every read and write of stream data goes through here.

Each operation is written once, as a generator that yields the queries it
needs (:class:`Q`) and receives their results. Two drivers run them:

* :func:`_run_sync` on the caller's Django connection, so the in-process API
  joins the caller's transaction (the model change streams rely on it);
* :func:`_run_async` on a psycopg async connection pool on the event loop,
  for the views: no thread hop, server-side binding with automatically
  prepared statements, and binary results (bytea arrives as raw bytes).

Writes lock the stream row (``SELECT ... FOR UPDATE``) for the whole append
transaction: offsets are minted under that lock, producer state is validated
and stored under it, and ``pg_notify`` is issued inside it, so readers are
only woken once the append is committed and visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import weakref
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from django.db import DatabaseError, connections, transaction
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

T = TypeVar("T")


@dataclass(frozen=True)
class Q:
    """One query an operation asks its driver to run."""

    sql: str
    params: Sequence | dict | None = None
    # "none", "one" (a row or None) or "all" (a list of rows)
    fetch: str = "none"
    # params is a list of parameter sets (executemany)
    many: bool = False


Op = Generator[Q, Any, T]


# --- drivers ---------------------------------------------------------------------


def _run_sync(op: Op[T], *, atomic: bool = False) -> T:
    """Run an operation on the Django connection (in the caller's transaction)."""
    alias = ds_settings.DATABASE_ALIAS
    block = transaction.atomic(using=alias) if atomic else contextlib.nullcontext()
    with block, connections[alias].cursor() as cursor:
        try:
            query = next(op)
            while True:
                if query.many:
                    cursor.executemany(query.sql, query.params)
                    result = None
                else:
                    cursor.execute(query.sql, query.params)
                    result = _fetch_result(cursor, query.fetch)
                query = op.send(result)
        except StopIteration as stop:
            return stop.value


def _fetch_result(cursor, fetch: str):
    if fetch == "one":
        return cursor.fetchone()
    if fetch == "all":
        return cursor.fetchall()
    return None


def connection_params() -> dict:
    """Connection parameters of the stream database, for raw psycopg connections."""
    params = dict(connections[ds_settings.DATABASE_ALIAS].get_connection_params())
    # Keys Django adds that only make sense for its own synchronous connections.
    for key in ("context", "cursor_factory", "server_side_binding", "assume_role"):
        params.pop(key, None)
    return params


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = (
    weakref.WeakKeyDictionary()
)


async def _open_pool():
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        kwargs={**connection_params(), "autocommit": True},
        min_size=1,
        max_size=int(ds_settings.DB_POOL_SIZE),
        open=False,
        name="durable-streams",
    )
    await pool.open()
    return pool


async def _pool():
    loop = asyncio.get_running_loop()
    task = _pools.get(loop)
    if task is None or (task.done() and task.exception() is not None):
        task = _pools[loop] = loop.create_task(_open_pool())
    return await asyncio.shield(task)


async def close_pool() -> None:
    """Close the running loop's connection pool (tests, shutdown)."""
    task = _pools.pop(asyncio.get_running_loop(), None)
    if task is not None:
        await (await task).close()


async def _run_async(op: Op[T], *, atomic: bool = False) -> T:
    """Run an operation on the event loop's connection pool."""
    pool = await _pool()
    # Pipeline mode: statements whose results are not needed (the writes)
    # go out without waiting a round trip each; a fetch syncs.
    async with pool.connection() as conn, conn.pipeline():
        block = conn.transaction() if atomic else contextlib.nullcontext()
        async with block:
            cursor = conn.cursor(binary=True)
            try:
                query = next(op)
                while True:
                    if query.many:
                        await cursor.executemany(query.sql, query.params)
                        result = None
                    else:
                        await cursor.execute(query.sql, query.params)
                        if query.fetch == "one":
                            result = await cursor.fetchone()
                        elif query.fetch == "all":
                            result = await cursor.fetchall()
                        else:
                            result = None
                    query = op.send(result)
            except StopIteration as stop:
                return stop.value


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
    # Renderings of this chunk shared by every reader it was read for (SSE).
    renderings: dict = field(default_factory=dict, compare=False, repr=False)

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


# --- paths -------------------------------------------------------------------------

# Paths are indexed; Postgres refuses index entries past ~2.7 kB.
MAX_PATH_BYTES = 1024


def check_path(path: str) -> None:
    """Raise 400 for a path no stream may have."""
    if not path:
        raise BadRequest("empty stream path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadRequest(f"stream path is longer than {MAX_PATH_BYTES} bytes")
    if "\x00" in path or any(seg in (".", "..") for seg in path.split("/")):
        raise BadRequest("invalid stream path")


# --- building blocks ---------------------------------------------------------------


def _fetch(path: str, *, lock: bool) -> Op[StreamMeta | None]:
    sql = f"SELECT {_COLUMNS} FROM {_STREAM} WHERE path = %s"
    row = yield Q(sql + (" FOR UPDATE" if lock else ""), [path], "one")
    return StreamMeta.from_row(row) if row else None


def _has_forks(stream_id: int) -> Op[bool]:
    row = yield Q(
        f"SELECT EXISTS (SELECT 1 FROM {_STREAM} WHERE forked_from_id = %s)", [stream_id], "one"
    )
    return row[0]


def _notify(stream_id: int) -> Op[None]:
    # Delivered by Postgres only when the surrounding transaction commits.
    yield Q("SELECT pg_notify(%s, %s)", [ds_settings.NOTIFY_CHANNEL, str(stream_id)])


def _remove(meta: StreamMeta, now: dt.datetime) -> Op[None]:
    """Delete a stream (spec 5.4): soft if forks still read its data, else for
    good, then collect soft-deleted sources no fork needs any more (4.2)."""
    if (yield from _has_forks(meta.id)):
        yield Q(
            f"UPDATE {_STREAM} SET deleted_at = %s WHERE id = %s AND deleted_at IS NULL",
            [now, meta.id],
        )
        yield Q(f"DELETE FROM {_PRODUCER} WHERE stream_id = %s", [meta.id])
        yield from _notify(meta.id)
        return
    stream_id, source_id = meta.id, meta.forked_from_id
    while True:
        yield from _purge(stream_id)
        if source_id is None:
            return
        # Lock the source so a concurrent fork of it cannot slip in between.
        row = yield Q(
            f"SELECT deleted_at, forked_from_id FROM {_STREAM} WHERE id = %s FOR UPDATE",
            [source_id],
            "one",
        )
        if row is None or row[0] is None or (yield from _has_forks(source_id)):
            return
        stream_id, source_id = source_id, row[1]


def _purge(stream_id: int) -> Op[None]:
    """Remove a stream and everything stored for it."""
    yield Q(f"DELETE FROM {_SEGMENT} WHERE stream_id = %s", [stream_id])
    yield Q(f"DELETE FROM {_PRODUCER} WHERE stream_id = %s", [stream_id])
    yield Q(f"DELETE FROM {_STREAM} WHERE id = %s", [stream_id])
    _chains.pop(stream_id, None)
    yield from _notify(stream_id)


def _live(meta: StreamMeta | None, now: dt.datetime) -> Op[StreamMeta | None]:
    """``meta`` unless it is expired; expired streams are removed (locked callers
    only). One that forks still read is soft-deleted instead, so it answers 410."""
    if meta is not None and meta.deleted_at is None and meta.is_expired(now):
        yield from _remove(meta, now)
        row = yield Q(f"SELECT {_COLUMNS} FROM {_STREAM} WHERE id = %s", [meta.id], "one")
        return StreamMeta.from_row(row) if row else None
    return meta


def _require(path: str, now: dt.datetime) -> Op[StreamMeta]:
    """Lock the stream at ``path``; 404 if missing or expired, 410 if deleted."""
    meta = yield from _live((yield from _fetch(path, lock=True)), now)
    if meta is None:
        raise NotFound("stream not found")
    if meta.deleted_at is not None:
        raise Gone("stream was deleted")
    return meta


def _insert_segments(stream_id: int, segments: list[tuple[int, Payload]]) -> Q:
    return Q(
        f'INSERT INTO {_SEGMENT} (stream_id, start, "end", data, boundaries)'
        " VALUES (%s, %s, %s, %s, %s)",
        [[stream_id, start, start + p.units, p.data, p.boundaries] for start, p in segments],
        many=True,
    )


# --- metadata ----------------------------------------------------------------------


def _get_stream(path: str) -> Op[StreamMeta | None]:
    meta = yield from _fetch(path, lock=False)
    if meta is not None and meta.deleted_at is None and meta.is_expired():
        return None
    return meta


def _require_unlocked(path: str) -> Op[StreamMeta]:
    check_path(path)
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
    return _run_sync(_get_stream(path))


def require_stream(path: str) -> StreamMeta:
    """Like :func:`get_stream`, raising 404/410 instead of returning None."""
    return _run_sync(_require_unlocked(path))


async def arequire_stream(path: str) -> StreamMeta:
    return await _run_async(_require_unlocked(path))


# --- forks: the chain of streams a read stitches together ----------------------

# A fork's ancestry (ids and fork positions) never changes, and an ancestor's
# rows outlive every fork that reads them, so chains are cached per process.
_chains: dict[int, list[tuple[int, int | None]]] = {}
_CHAIN_CACHE_SIZE = 10_000


def _chain(meta: StreamMeta) -> Op[list[tuple[int, int | None]]]:
    """``[(stream id, fork position)]`` from ``meta`` up to its root stream."""
    if meta.forked_from_id is None:
        return [(meta.id, None)]
    chain = _chains.get(meta.id)
    if chain is None:
        rows = yield Q(
            f"WITH RECURSIVE chain(id, forked_from_id, fork_offset, depth) AS ("
            f"  SELECT id, forked_from_id, fork_offset, 0 FROM {_STREAM} WHERE id = %s"
            f"  UNION ALL"
            f"  SELECT s.id, s.forked_from_id, s.fork_offset, c.depth + 1"
            f"  FROM {_STREAM} s JOIN chain c ON s.id = c.forked_from_id"
            f") SELECT id, fork_offset FROM chain ORDER BY depth",
            [meta.id],
            "all",
        )
        chain = [(row[0], row[1]) for row in rows]
        if len(_chains) >= _CHAIN_CACHE_SIZE:
            _chains.clear()
        _chains[meta.id] = chain
    return chain


def _layers(meta: StreamMeta) -> Op[list[tuple[int, int, int]]]:
    """``[(stream id, lo, hi)]``: which stream stores each range of positions
    below the stream's tail, in position order."""
    hi = meta.tail
    layers = []
    for stream_id, fork_offset in (yield from _chain(meta)):
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


def _resolve_fork(fork: ForkSpec, now: dt.datetime) -> Op[tuple[StreamMeta, int]]:
    """Lock the fork's source and return it with the fork position."""
    source = yield from _live((yield from _fetch(fork.source_path, lock=True)), now)
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
    for stream_id, lo, hi in (yield from _layers(source)):
        if lo <= anchor < hi:
            row = yield Q(
                f'SELECT "end" FROM {_SEGMENT} WHERE stream_id = %s AND "end" > %s'
                f' AND start <= %s ORDER BY "end" LIMIT 1',
                [stream_id, anchor, anchor],
                "one",
            )
            if row and anchor + fork.sub_offset <= min(row[0], hi):
                return source, anchor + fork.sub_offset
            break
    raise BadRequest("Stream-Fork-Sub-Offset is past the next data boundary")


# --- create -----------------------------------------------------------------------


def _create_stream(
    path: str,
    content_type: str | None,
    ttl_seconds: int | None,
    expires_at: dt.datetime | None,
    closed: bool,
    payload: Payload | None,
    fork: ForkSpec | None,
) -> Op[tuple[bool, StreamMeta]]:
    check_path(path)
    now = timezone.now()
    existing = yield from _live((yield from _fetch(path, lock=True)), now)
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
            f"INSERT INTO {_STREAM} (path, content_type, ttl_seconds, expires_at, closed,"
            " tail, created_at, last_access_at, forked_from_id, fork_offset)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (path) DO NOTHING RETURNING {_COLUMNS}",
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
            existing = yield from _fetch(path, lock=True)
        else:
            meta = StreamMeta.from_row(row)
            if payload is not None and payload.units:
                yield _insert_segments(meta.id, [(tail, payload)])
                row = yield Q(
                    f"UPDATE {_STREAM} SET tail = %s WHERE id = %s RETURNING {_COLUMNS}",
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
    return _run_sync(op, atomic=True)


async def acreate_stream(path: str, **fields) -> tuple[bool, StreamMeta]:
    """:func:`create_stream` on the event loop's pool."""
    op = _create_stream(
        path,
        fields.get("content_type"),
        fields.get("ttl_seconds"),
        fields.get("expires_at"),
        fields.get("closed", False),
        fields.get("payload"),
        fields.get("fork"),
    )
    return await _run_async(op, atomic=True)


# --- append and close -----------------------------------------------------------


@dataclass(frozen=True)
class AppendRequest:
    """One append (or close) as :func:`append_batch` takes it.

    ``payload_error`` is a body that failed to parse: it is reported only after
    the checks the spec ranks above it (closure, content type).
    """

    path: str
    content_type: str | None = None
    payload: Payload | None = None
    payload_error: StreamError | None = None
    close: bool = False
    stream_seq: str | None = None
    producer: Producer | None = None

    @property
    def has_body(self) -> bool:
        return self.payload is not None or self.payload_error is not None


def append(path: str, **fields) -> AppendResult:
    """Append a payload (and/or close the stream) atomically (spec 5.2, 5.3).

    Takes the fields of :class:`AppendRequest`; raises its protocol error.
    """
    outcome = append_batch([AppendRequest(path, **fields)])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class _Tail:
    """A stream's writable state while a batch of appends is applied to it."""

    def __init__(self, meta: StreamMeta, producers: dict[str, tuple[int, int]]) -> None:
        self.meta = meta
        self.tail = meta.tail
        self.closed = meta.closed
        self.closed_by = meta.closed_by
        self.stream_seq = meta.last_stream_seq
        self.producers = producers
        self.segments: list[tuple[int, Payload]] = []
        self.touched_producers: set[str] = set()
        self.changed = False


def _append_batch(requests: list[AppendRequest]) -> Op[list[AppendResult | StreamError]]:
    outcomes: list[AppendResult | StreamError | None] = [None] * len(requests)
    by_path: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        try:
            check_path(request.path)
        except StreamError as exc:
            outcomes[index] = exc
            continue
        if not request.has_body and not request.close:
            outcomes[index] = BadRequest("empty body: nothing to append")
        else:
            by_path.setdefault(request.path, []).append(index)
    now = timezone.now()
    for path in sorted(by_path):
        indexes = by_path[path]
        try:
            meta = yield from _require(path, now)
        except StreamError as exc:
            for index in indexes:
                outcomes[index] = exc
            continue
        producers = yield from _producer_states(meta.id, [requests[i] for i in indexes])
        state = _Tail(meta, producers)
        for index in indexes:
            try:
                outcomes[index] = _apply(state, requests[index])
            except StreamError as exc:
                outcomes[index] = exc
        if state.changed:
            yield from _write(state, now)
    return outcomes  # type: ignore[return-value]


BatchOutcome = AppendResult | StreamError | Exception


def append_batch(requests: list[AppendRequest]) -> list[BatchOutcome]:
    """Apply appends in one transaction: group commit.

    Each request is validated in order against the state the earlier ones
    left, exactly as if they had run one after another, and gets its own
    result or protocol error; a rejected request writes nothing. Streams are
    locked in path order, so concurrent batches cannot deadlock, and every
    changed stream is notified once, on commit.

    Should the database reject the batch (something validation did not
    foresee), each request is retried alone, so only the one at fault fails:
    its outcome is then the database error itself.
    """
    try:
        return _run_sync(_append_batch(requests), atomic=True)
    except (DatabaseError, psycopg.Error):
        if len(requests) == 1:
            raise
    outcomes: list[BatchOutcome] = []
    for request in requests:
        try:
            outcomes.extend(_run_sync(_append_batch([request]), atomic=True))
        except (DatabaseError, psycopg.Error) as exc:
            outcomes.append(exc)
    return outcomes


async def aappend_batch(requests: list[AppendRequest]) -> list[BatchOutcome]:
    """:func:`append_batch` on the event loop's pool."""
    try:
        return await _run_async(_append_batch(requests), atomic=True)
    except psycopg.Error:
        if len(requests) == 1:
            raise
    outcomes: list[BatchOutcome] = []
    for request in requests:
        try:
            outcomes.extend(await _run_async(_append_batch([request]), atomic=True))
        except psycopg.Error as exc:
            outcomes.append(exc)
    return outcomes


def _producer_states(
    stream_id: int, requests: list[AppendRequest]
) -> Op[dict[str, tuple[int, int]]]:
    ids = sorted({r.producer.producer_id for r in requests if r.producer is not None})
    if not ids:
        return {}
    rows = yield Q(
        f"SELECT producer_id, epoch, last_seq FROM {_PRODUCER}"
        " WHERE stream_id = %s AND producer_id = ANY(%s)",
        [stream_id, ids],
        "all",
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def _apply(state: _Tail, request: AppendRequest) -> AppendResult:
    """Validate one request against ``state`` and stage its writes."""
    producer = request.producer
    if state.closed:
        return _append_to_closed(state, has_body=request.has_body, producer=producer)
    if request.has_body:
        if request.content_type is None:
            raise BadRequest("Content-Type is required with a body")
        if not same_type(request.content_type, state.meta.content_type):
            raise Conflict("Content-Type does not match the stream")
        if request.payload_error is not None:
            raise request.payload_error
    if producer is not None:
        current = state.producers.get(producer.producer_id)
        if validate(current, producer) is Outcome.DUPLICATE:
            assert current is not None
            return AppendResult(
                state.tail,
                False,
                duplicate=True,
                producer_epoch=current[0],
                producer_seq=current[1],
            )
    if request.stream_seq is not None and state.stream_seq is not None:
        # Byte-wise order: code point order of latin-1/UTF-8 decoded text.
        if request.stream_seq <= state.stream_seq:
            raise Conflict("Stream-Seq must increase")
    payload = request.payload
    if payload is not None and payload.units:
        state.segments.append((state.tail, payload))
        state.tail += payload.units
    if request.stream_seq is not None:
        state.stream_seq = request.stream_seq
    if producer is not None:
        state.producers[producer.producer_id] = (producer.epoch, producer.seq)
        state.touched_producers.add(producer.producer_id)
    if request.close:
        state.closed = True
        if producer is not None:
            state.closed_by = (producer.producer_id, producer.epoch, producer.seq)
    state.changed = True
    return AppendResult(
        state.tail,
        request.close,
        producer_epoch=producer.epoch if producer else None,
        producer_seq=producer.seq if producer else None,
    )


def _write(state: _Tail, now: dt.datetime) -> Op[None]:
    """Store what a batch staged for one stream, and notify its readers."""
    stream_id = state.meta.id
    if state.segments:
        yield _insert_segments(stream_id, state.segments)
    closed_by = state.closed_by or (None, None, None)
    yield Q(
        f"UPDATE {_STREAM} SET tail = %s, closed = %s, last_access_at = %s,"
        " last_stream_seq = %s, closed_by_producer = %s, closed_by_epoch = %s,"
        " closed_by_seq = %s WHERE id = %s",
        [state.tail, state.closed, now, state.stream_seq, *closed_by, stream_id],
    )
    if state.touched_producers:
        yield Q(
            f"INSERT INTO {_PRODUCER} (stream_id, producer_id, epoch, last_seq, updated_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stream_id, producer_id) DO UPDATE"
            " SET epoch = EXCLUDED.epoch, last_seq = EXCLUDED.last_seq,"
            " updated_at = EXCLUDED.updated_at",
            [
                [stream_id, pid, *state.producers[pid], now]
                for pid in sorted(state.touched_producers)
            ],
            many=True,
        )
    yield from _notify(stream_id)


def _append_to_closed(state: _Tail, *, has_body: bool, producer: Producer | None) -> AppendResult:
    if producer is not None and state.closed_by == (
        producer.producer_id,
        producer.epoch,
        producer.seq,
    ):
        # A retry of the very request that closed the stream.
        return AppendResult(
            state.tail,
            True,
            duplicate=True,
            producer_epoch=producer.epoch,
            producer_seq=producer.seq,
        )
    if not has_body:
        return AppendResult(state.tail, True, duplicate=True)
    raise Conflict(
        "stream is closed",
        headers={"Stream-Closed": "true", "Stream-Next-Offset": offsets.encode(state.tail)},
    )


# --- read ---------------------------------------------------------------------------


def _read(path: str, position: int | None, budget: int, touch: bool = True) -> Op[ReadResult]:
    meta = yield from _require_unlocked(path)
    if touch and meta.ttl_seconds is not None:
        # Reads slide the TTL window (spec 5.1); HEAD does not.
        yield Q(
            f"UPDATE {_STREAM} SET last_access_at = %s WHERE id = %s",
            [timezone.now(), meta.id],
        )
    if position is None:
        position = meta.tail
    if position > meta.tail:
        raise BadRequest("offset is beyond the end of the stream")
    pieces, units = yield from _read_range(meta, position, budget)
    if meta.is_json:
        body = b"[" + b",".join(pieces) + b"]"
    else:
        body = b"".join(pieces)
    return ReadResult(meta, body, position, position + units, units)


def read(path: str, position: int | None, *, max_bytes: int | None = None) -> ReadResult:
    """Read from ``position`` (None: the tail) up to ``max_bytes`` of body.

    Raises 404/410 for missing, expired or deleted streams and 400 for a
    position past the tail. Reading resets a sliding TTL.
    """
    return _run_sync(_read(path, position, max_bytes or int(ds_settings.MAX_CHUNK_SIZE)))


# Reads in flight per event loop: (path, position, budget) -> (start, task).
_shared_reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict] = (
    weakref.WeakKeyDictionary()
)


async def aread(
    path: str,
    position: int | None,
    *,
    max_bytes: int | None = None,
    shared_since: float | None = None,
) -> ReadResult:
    """:func:`read` on the event loop's pool.

    With ``shared_since`` (a monotonic instant), the caller accepts the result
    of an identical read already in flight if that read started at or after
    that instant: when one append wakes many live readers at the same offset,
    one query serves them all. A read started before the caller's wake could
    miss the commit that woke it, so it is never shared.
    """
    budget = max_bytes or int(ds_settings.MAX_CHUNK_SIZE)
    if shared_since is None:
        return await _run_async(_read(path, position, budget))
    loop = asyncio.get_running_loop()
    reads = _shared_reads.setdefault(loop, {})
    key = (path, position, budget)
    entry = reads.get(key)
    if entry is None or entry[0] < shared_since:
        task = loop.create_task(_run_async(_read(path, position, budget)))
        entry = reads[key] = (time.monotonic(), task)
        task.add_done_callback(lambda done: _forget_read(reads, key, done))
    return await asyncio.shield(entry[1])


def _forget_read(reads: dict, key: tuple, task: asyncio.Task) -> None:
    entry = reads.get(key)
    if entry is not None and entry[1] is task:
        del reads[key]
    if not task.cancelled():
        task.exception()  # retrieved: each awaiting reader re-raises it


def _read_range(meta: StreamMeta, position: int, budget: int) -> Op[tuple[list[bytes], int]]:
    """Pieces of stored data from ``position`` up to the tail, within ``budget``.

    A fork's positions are spread over its chain; each layer is read from the
    stream that stores it, so reading never depends on inherited data size.
    """
    pieces: list[bytes] = []
    used = 0
    pos = position
    json_mode = meta.is_json
    for stream_id, _lo, hi in (yield from _layers(meta)):
        while pos < hi and used < budget:
            rows = yield _segments_query(stream_id, pos, hi, budget - used, json_mode)
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


def _segments_query(stream_id: int, pos: int, tail: int, budget: int, json_mode: bool) -> Q:
    # The window sum stops the fetch once the budget is covered, so a read of
    # a huge stream never loads more rows than one chunk needs. Binary rows
    # are cut in SQL to the part the read uses.
    size = "octet_length(data)" if json_mode else '("end" - GREATEST(start, %(pos)s))'
    data = (
        "data"
        if json_mode
        else ("substring(data FROM (GREATEST(%(pos)s - start, 0) + 1)::int FOR %(budget)s::int)")
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
    return Q(sql, {"id": stream_id, "pos": pos, "tail": tail, "budget": budget}, "all")


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


def _delete_stream(path: str) -> Op[None]:
    now = timezone.now()
    yield from _remove((yield from _require(path, now)), now)


def delete_stream(path: str) -> None:
    """Delete a stream and its data (spec 5.4); soft-delete it while forks
    still read it, and collect sources that no fork needs any more."""
    _run_sync(_delete_stream(path), atomic=True)


async def adelete_stream(path: str) -> None:
    """:func:`delete_stream` on the event loop's pool."""
    await _run_async(_delete_stream(path), atomic=True)


def iter_paths(prefix: str = "") -> Iterable[str]:
    """Paths of the live streams starting with ``prefix``, in order."""
    rows = _run_sync(_paths(prefix))
    return [row[0] for row in rows]


def _paths(prefix: str) -> Op[list]:
    return (
        yield Q(
            f"SELECT path FROM {_STREAM} WHERE deleted_at IS NULL AND starts_with(path, %s)"
            " ORDER BY path",
            [prefix],
            "all",
        )
    )


# --- operations: expiry, inspection, health ----------------------------------------


def _expired_batch(limit: int, now: dt.datetime) -> Op[int]:
    # SKIP LOCKED: streams busy in another transaction wait for the next run.
    rows = yield Q(
        f"SELECT {_COLUMNS} FROM {_STREAM} WHERE deleted_at IS NULL AND ("
        "  (ttl_seconds IS NOT NULL"
        "   AND last_access_at + ttl_seconds * interval '1 second' <= %(now)s)"
        "  OR (ttl_seconds IS NULL AND expires_at <= %(now)s))"
        " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
        {"now": now, "limit": limit},
        "all",
    )
    for row in rows:
        yield from _remove(StreamMeta.from_row(row), now)
    return len(rows)


def expire(*, batch_size: int = 500, max_batches: int | None = None) -> int:
    """Remove expired streams and their data, ``batch_size`` streams per
    transaction, until none is left (or ``max_batches`` ran); returns how many.

    Expired streams already answer 404; this reclaims their rows. An expired
    stream that live forks still read is soft-deleted (its data stays until
    the last fork goes), exactly as a DELETE would.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    removed = batches = 0
    while max_batches is None or batches < max_batches:
        count = _run_sync(_expired_batch(batch_size, timezone.now()), atomic=True)
        removed += count
        batches += 1
        if count < batch_size:
            break
    return removed


def peek(path: str, position: int | None, *, max_bytes: int | None = None) -> ReadResult:
    """:func:`read` for inspection (admin, commands): it never slides a TTL."""
    budget = max_bytes or int(ds_settings.MAX_CHUNK_SIZE)
    return _run_sync(_read(path, position, budget, touch=False))


def _ping() -> Op[None]:
    yield Q("SELECT 1", None, "one")


async def aping() -> None:
    """One round trip on the event loop's pool (health checks)."""
    await _run_async(_ping())
