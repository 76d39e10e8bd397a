"""Where the stream data lives: table names (from the models, which define the
schema and its migrations) and the stream row's column list."""

from __future__ import annotations

from ..models import ProducerState, Segment, Stream

STREAM = Stream._meta.db_table
SEGMENT = Segment._meta.db_table
PRODUCER = ProducerState._meta.db_table

# The stream row's columns, in the order StreamMeta.from_row reads them.
COLUMNS = (
    "id, path, content_type, ttl_seconds, expires_at, closed, tail, created_at,"
    " last_access_at, last_stream_seq, closed_by_producer, closed_by_epoch,"
    " closed_by_seq, forked_from_id, fork_offset, deleted_at"
)
