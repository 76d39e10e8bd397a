"""Appending to and closing streams (spec 5.2, 5.3): batches of requests
applied in one transaction (the group committer's unit of work).

:func:`apply` is the whole rule set of one request (closure, content type,
producer, Stream-Seq) over a :class:`Tail` in memory; the generator ops around
it only lock, load and store.
"""

from __future__ import annotations

import datetime as dt

import psycopg
from django.db import DatabaseError
from django.utils import timezone

from .. import offsets
from ..conf import ds_settings
from ..content import Payload, same_type
from ..exceptions import BadRequest, Conflict, StreamError
from ..producers import Outcome, Producer, validate
from . import deadline, streams
from .arrays import ByteaArray, Int8Array, TextArray
from .drivers import Op, Q, run_async, run_sync
from .schema import PRODUCER, SEGMENT, STREAM
from .types import AppendRequest, AppendResult, BatchOutcome, StreamMeta


def insert_segments(stream_id: int, segments: list[tuple[int, Payload]]) -> Q:
    """The insert of appended payloads, each with its start position."""
    return Q(
        f'INSERT INTO {SEGMENT} (stream_id, start, "end", data, boundaries)'
        " VALUES (%s, %s, %s, %s, %s)",
        [[stream_id, start, start + p.units, p.data, p.boundaries] for start, p in segments],
        many=True,
    )


class Tail:
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
    """Append a payload (and/or close the stream) atomically (spec 5.2, 5.3).

    Takes the fields of :class:`AppendRequest`; raises its protocol error.
    """
    request = AppendRequest(path, content_type, payload, payload_error, close, stream_seq, producer)
    outcome = append_batch([request])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


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
        return run_sync(batch(requests), atomic=True)
    except (DatabaseError, psycopg.Error):
        if len(requests) == 1:
            raise
    outcomes: list[BatchOutcome] = []
    for request in requests:
        try:
            outcomes.extend(run_sync(batch([request]), atomic=True))
        except (DatabaseError, psycopg.Error) as exc:
            outcomes.append(exc)
    return outcomes


async def aappend_batch(requests: list[AppendRequest]) -> list[BatchOutcome]:
    """:func:`append_batch` on the event loop's pool.

    The streams whose requests in the batch are all plain appends go first,
    in one statement (:func:`plain_batch`); the rest, and any stream that
    statement did not take, through :func:`batch`.
    """
    outcomes: list[BatchOutcome | None] = [None] * len(requests)
    groups = _plain_groups(requests)
    if groups:
        try:
            # One statement, its own transaction: it may have committed even
            # if the connection fails before answering, so it is never resent.
            taken = await run_async(plain_batch(requests, groups), resend=False)
        except (DatabaseError, psycopg.Error):
            taken = {}  # the statement rolled back; batch() finds the request at fault
        for path, results in taken.items():
            for index, result in zip(groups[path], results, strict=True):
                outcomes[index] = result
    rest = [index for index, outcome in enumerate(outcomes) if outcome is None]
    if len(rest) < len(requests):
        if rest:
            for index, outcome in zip(
                rest, await _aappend_locked([requests[i] for i in rest]), strict=True
            ):
                outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]
    return await _aappend_locked(requests)


async def _aappend_locked(requests: list[AppendRequest]) -> list[BatchOutcome]:
    try:
        return await run_async(batch(requests), atomic=True)
    except psycopg.Error:
        if len(requests) == 1:
            raise
    outcomes: list[BatchOutcome] = []
    for request in requests:
        try:
            outcomes.extend(await run_async(batch([request]), atomic=True))
        except psycopg.Error as exc:
            outcomes.append(exc)
    return outcomes


def batch(requests: list[AppendRequest]) -> Op[list[AppendResult | StreamError]]:
    """The op of :func:`append_batch`: one outcome per request, in order."""
    outcomes: list[AppendResult | StreamError | None] = [None] * len(requests)
    by_path: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        try:
            streams.check_path(request.path)
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
            meta = yield from streams.require_locked(path, now)
        except StreamError as exc:
            for index in indexes:
                outcomes[index] = exc
            continue
        producers = yield from _producer_states(meta.id, [requests[i] for i in indexes])
        state = Tail(meta, producers)
        for index in indexes:
            try:
                outcomes[index] = apply(state, requests[index])
            except StreamError as exc:
                outcomes[index] = exc
        if state.changed:
            yield from _write(state, now)
    return outcomes  # type: ignore[return-value]


def _is_plain(request: AppendRequest) -> bool:
    """An append of data and nothing else: no producer, Stream-Seq or close."""
    return (
        request.producer is None
        and request.stream_seq is None
        and not request.close
        and request.payload is not None
        and request.payload.units > 0
        and request.payload_error is None
        and request.content_type is not None
    )


def _plain_groups(requests: list[AppendRequest]) -> dict[str, list[int]]:
    """Request indexes by path, for the paths whose requests are all plain
    and name the same Content-Type."""
    groups: dict[str, list[int]] = {}
    other: set[str] = set()
    for index, request in enumerate(requests):
        group = groups.get(request.path)
        if not _is_plain(request) or (
            group is not None and requests[group[0]].content_type != request.content_type
        ):
            other.add(request.path)
        elif group is None:
            groups[request.path] = [index]
        else:
            group.append(index)
    for path in list(groups):
        if path in other:
            del groups[path]
        else:
            try:
                streams.check_path(path)
            except StreamError:
                del groups[path]
    return groups


# Plain appends to several streams in one statement: lock the streams that
# take them as they are (open, live, same Content-Type string), in path order
# as batch() does, move each tail, insert the payloads at the old tail and
# notify, all in the statement's own transaction: one round trip, and no row
# lock held while a result travels to Python and back. A stream it leaves out
# (closed, expired, missing, another spelling of its type) goes to batch().
_PLAIN_SQL = f"""
WITH req (path, ctype, total) AS (
    SELECT * FROM unnest(%(paths)s::text[], %(ctypes)s::text[], %(totals)s::bigint[])
), locked AS (
    SELECT s.id, s.path FROM {STREAM} s JOIN req ON s.path = req.path
    WHERE NOT s.closed AND s.deleted_at IS NULL AND s.content_type = req.ctype
      AND ({deadline.SQL} IS NULL OR {deadline.SQL} > %(now)s)
    ORDER BY s.path FOR UPDATE OF s
), moved AS (
    UPDATE {STREAM} s SET tail = s.tail + req.total, last_access_at = %(now)s
    FROM locked JOIN req ON req.path = locked.path WHERE s.id = locked.id
    RETURNING s.id, s.path, s.tail - req.total AS base
), stored AS (
    INSERT INTO {SEGMENT} (stream_id, start, "end", data, boundaries)
    SELECT moved.id, moved.base + p.start, moved.base + p.stop, p.data, p.boundaries::integer[]
    FROM unnest(%(seg_paths)s::text[], %(starts)s::bigint[], %(stops)s::bigint[],
                %(datas)s::bytea[], %(boundaries)s::text[])
         AS p (path, start, stop, data, boundaries)
    JOIN moved ON moved.path = p.path
)
SELECT moved.path, moved.base, pg_notify(%(channel)s, moved.id::text)::text FROM moved
"""


def plain_batch(
    requests: list[AppendRequest], groups: dict[str, list[int]]
) -> Op[dict[str, list[AppendResult]]]:
    """The op of plain appends (``groups``: request indexes by path, all plain):
    the results of the streams it appended to, by path."""
    paths, ctypes, totals = TextArray(), TextArray(), Int8Array()
    seg_paths, starts, stops = TextArray(), Int8Array(), Int8Array()
    datas, boundaries = ByteaArray(), TextArray()
    ends_by_path: list[list[int]] = []
    for path, indexes in groups.items():
        position = 0
        ends_by_path.append([])
        for index in indexes:
            payload = requests[index].payload
            assert payload is not None
            seg_paths.append(path)
            starts.append(position)
            position += payload.units
            stops.append(position)
            ends_by_path[-1].append(position)
            datas.append(payload.data)
            bounds = payload.boundaries
            boundaries.append(None if bounds is None else f"{{{','.join(map(str, bounds))}}}")
        paths.append(path)
        ctypes.append(requests[indexes[0]].content_type)
        totals.append(position)
    rows = yield Q(
        _PLAIN_SQL,
        {
            "paths": paths,
            "ctypes": ctypes,
            "totals": totals,
            "now": timezone.now(),
            "seg_paths": seg_paths,
            "starts": starts,
            "stops": stops,
            "datas": datas,
            "boundaries": boundaries,
            "channel": ds_settings.NOTIFY_CHANNEL,
        },
        "all",
    )
    ends = dict(zip(paths, ends_by_path, strict=True))
    return {path: [AppendResult(base + end, False) for end in ends[path]] for path, base, _ in rows}


def _producer_states(
    stream_id: int, requests: list[AppendRequest]
) -> Op[dict[str, tuple[int, int]]]:
    ids = sorted({r.producer.producer_id for r in requests if r.producer is not None})
    if not ids:
        return {}
    rows = yield Q(
        f"SELECT producer_id, epoch, last_seq FROM {PRODUCER}"
        " WHERE stream_id = %s AND producer_id = ANY(%s)",
        [stream_id, ids],
        "all",
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def apply(state: Tail, request: AppendRequest) -> AppendResult:
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
            raise Conflict("Stream-Seq sequence conflict: it must increase")
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


def _write(state: Tail, now: dt.datetime) -> Op[None]:
    """Store what a batch staged for one stream, and notify its readers."""
    stream_id = state.meta.id
    if state.segments:
        yield insert_segments(stream_id, state.segments)
    closed_by = state.closed_by or (None, None, None)
    yield Q(
        f"UPDATE {STREAM} SET tail = %s, closed = %s, last_access_at = %s,"
        " last_stream_seq = %s, closed_by_producer = %s, closed_by_epoch = %s,"
        " closed_by_seq = %s WHERE id = %s",
        [state.tail, state.closed, now, state.stream_seq, *closed_by, stream_id],
    )
    if state.touched_producers:
        yield Q(
            f"INSERT INTO {PRODUCER} (stream_id, producer_id, epoch, last_seq, updated_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stream_id, producer_id) DO UPDATE"
            " SET epoch = EXCLUDED.epoch, last_seq = EXCLUDED.last_seq,"
            " updated_at = EXCLUDED.updated_at",
            [
                [stream_id, pid, *state.producers[pid], now]
                for pid in sorted(state.touched_producers)
            ],
            many=True,
        )
    yield from streams.notify(stream_id)


def _append_to_closed(state: Tail, *, has_body: bool, producer: Producer | None) -> AppendResult:
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
    if not has_body and producer is None:
        return AppendResult(state.tail, True, duplicate=True)
    # Spec 5.2.1: a producer's request other than the one that closed the
    # stream conflicts, close-only or not (the reference server agrees).
    raise Conflict(
        "stream is closed",
        headers={"Stream-Closed": "true", "Stream-Next-Offset": offsets.encode(state.tail)},
    )
