"""The values storage operations take and return."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

from django.utils import timezone

from .. import offsets
from ..content import Payload, is_json
from ..exceptions import StreamError
from ..producers import Producer
from . import deadline


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
        """Build from a row of :data:`~durable_streams.storage.schema.COLUMNS`."""
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
        return deadline.deadline(self.ttl_seconds, self.last_access_at, self.expires_at)

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return deadline.is_past(self.deadline(), now or timezone.now())


@dataclass(frozen=True)
class ForkSpec:
    """The fork headers of a PUT (spec 4.2)."""

    source_path: str
    # None: the source's tail at creation time.
    offset: int | None = None
    sub_offset: int = 0


@dataclass(frozen=True)
class AppendRequest:
    """One append (or close) as :func:`~durable_streams.storage.append_batch` takes it.

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


# One outcome per request of a batch: its result, its protocol error, or the
# database error that made it fail on its own.
BatchOutcome = AppendResult | StreamError | Exception


@dataclass(frozen=True)
class ReadResult:
    """One chunk read from a stream, as its HTTP body would carry it."""

    stream: StreamMeta
    body: bytes
    start: int
    next_position: int
    # Units (bytes, or JSON messages) in ``body``.
    units: int

    @classmethod
    def nothing_at(cls, stream: StreamMeta, position: int) -> ReadResult:
        """The read of nothing at ``position``: an empty body of the stream's kind."""
        return cls(stream, b"[]" if stream.is_json else b"", position, position, 0)

    # Cached: one read is shared by every reader of a stream (live.Feed).
    @cached_property
    def up_to_date(self) -> bool:
        return self.next_position >= self.stream.tail

    @cached_property
    def closed(self) -> bool:
        """EOF: the stream is closed and this chunk reaches its final offset."""
        return self.stream.closed and self.up_to_date

    @cached_property
    def next_offset(self) -> str:
        return offsets.encode(self.next_position)
