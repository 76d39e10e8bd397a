"""Reading stream data: one chunk from a position, as an HTTP body carries it.

A read fills at most ``budget`` bytes of body. Byte streams are cut in SQL to
the part the read uses; JSON streams are cut at message boundaries (stored
with each segment) without parsing. Forks are read layer by layer from the
streams that store their positions (:mod:`.forks`).
"""

from __future__ import annotations

import asyncio
import time
import weakref

from django.utils import timezone

from ..conf import ds_settings
from ..exceptions import BadRequest
from . import forks, streams
from .drivers import Op, Q, run_async, run_sync
from .schema import SEGMENT, STREAM
from .types import ReadResult, StreamMeta

# Rows fetched per query while filling one read; bounded by MAX_CHUNK_SIZE too.
_READ_BATCH = 512


def read_op(path: str, position: int | None, budget: int, touch: bool = True) -> Op[ReadResult]:
    """The op of :func:`read`; ``touch`` slides a TTL (HEAD and inspection do not)."""
    meta = yield from streams.require(path)
    if touch and meta.ttl_seconds is not None:
        # Reads slide the TTL window (spec 5.1); HEAD does not.
        yield Q(
            f"UPDATE {STREAM} SET last_access_at = %s WHERE id = %s",
            [timezone.now(), meta.id],
        )
    if position is None:
        position = meta.tail
    if position > meta.tail:
        raise BadRequest("offset is beyond the end of the stream")
    pieces, units = yield from read_range(meta, position, budget)
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
    return run_sync(read_op(path, position, max_bytes or ds_settings.MAX_CHUNK_SIZE))


def peek(path: str, position: int | None, *, max_bytes: int | None = None) -> ReadResult:
    """:func:`read` for inspection (admin, commands): it never slides a TTL."""
    budget = max_bytes or ds_settings.MAX_CHUNK_SIZE
    return run_sync(read_op(path, position, budget, touch=False))


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
    budget = max_bytes or ds_settings.MAX_CHUNK_SIZE
    if shared_since is None:
        return await run_async(read_op(path, position, budget))
    loop = asyncio.get_running_loop()
    reads = _shared_reads.setdefault(loop, {})
    key = (path, position, budget)
    entry = reads.get(key)
    if entry is None or entry[0] < shared_since:
        task = loop.create_task(run_async(read_op(path, position, budget)))
        entry = reads[key] = (time.monotonic(), task)
        task.add_done_callback(lambda done: _forget_read(reads, key, done))
    return await asyncio.shield(entry[1])


def _forget_read(reads: dict, key: tuple, task: asyncio.Task) -> None:
    entry = reads.get(key)
    if entry is not None and entry[1] is task:
        del reads[key]
    if not task.cancelled():
        task.exception()  # retrieved: each awaiting reader re-raises it


def read_range(meta: StreamMeta, position: int, budget: int) -> Op[tuple[list[bytes], int]]:
    """Pieces of stored data from ``position`` up to the tail, within ``budget``,
    and the units they hold.

    A fork's positions are spread over its chain; each layer is read from the
    stream that stores it, so reading never depends on inherited data size.
    """
    pieces: list[bytes] = []
    used = 0
    pos = position
    json_mode = meta.is_json
    for stream_id, _lo, hi in (yield from forks.layers(meta)):
        while pos < hi and used < budget:
            rows = yield segments_query(stream_id, pos, hi, budget - used, json_mode)
            if not rows:
                return pieces, pos - position  # defensive: never spin on a gap
            for start, end, data, bounds in rows:
                end = min(end, hi)  # an ancestor's append may run past the fork point
                if json_mode:
                    piece, taken = json_slice(
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


def segments_query(stream_id: int, pos: int, tail: int, budget: int, json_mode: bool) -> Q:
    """The segments of one stream from ``pos`` (below ``tail``) that a read of
    ``budget`` bytes needs; byte segments arrive cut to start at ``pos``."""
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
        f'    SELECT start, "end", data, boundaries FROM {SEGMENT}'
        '     WHERE stream_id = %(id)s AND "end" > %(pos)s AND start < %(tail)s'
        f'    ORDER BY "end" LIMIT {_READ_BATCH}'
        "  ) page"
        ') windowed WHERE before < %(budget)s ORDER BY "end"'
    )
    return Q(sql, {"id": stream_id, "pos": pos, "tail": tail, "budget": budget}, "all")


def json_slice(
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
