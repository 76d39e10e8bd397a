"""In-process API: create, append to, read and close streams without HTTP.

Every function shares the storage of the HTTP views and wakes the same live
readers (in this process and every other), because appends notify through
Postgres. Sync functions run on the caller's database connection and join its
transaction: an append inside ``transaction.atomic()`` becomes visible, and
wakes readers, only when that transaction commits. Each ``a``-prefixed
coroutine is the async twin of the function without the prefix; twins run on
the event loop's connection pool, as the HTTP views do (appends share the
views' group commit), each in a transaction of its own.

``data`` may be bytes, str (encoded as UTF-8), or, for ``application/json``
streams, any JSON-serialisable value; a list is flattened one level into
separate messages, exactly as an HTTP POST body would be.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from . import content, offsets, storage
from .producers import Producer
from .storage import AppendRequest, AppendResult, ReadResult, StreamMeta, groupcommit

__all__ = [
    "AppendResult",
    "Producer",
    "ReadResult",
    "StreamMeta",
    "aappend",
    "aclose",
    "acreate_stream",
    "adelete",
    "ahead",
    "append",
    "aread",
    "close",
    "create_stream",
    "delete",
    "head",
    "read",
    "read_json",
]


def _payload(content_type: str, data: Any, *, allow_empty: bool) -> content.Payload | None:
    if data is None:
        return None
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif isinstance(data, str):
        raw = data.encode("utf-8")
    elif content.is_json(content_type):
        raw = json.dumps(data, separators=(",", ":")).encode("utf-8")
    else:
        raise TypeError(f"{type(data).__name__} data needs an application/json stream")
    if not raw:
        return None
    return content.parse_body(content_type, raw, allow_empty_json=allow_empty)


def create_stream(
    path: str,
    *,
    content_type: str = content.DEFAULT_CONTENT_TYPE,
    ttl_seconds: int | None = None,
    expires_at: dt.datetime | None = None,
    closed: bool = False,
    data: Any = None,
) -> StreamMeta:
    """Create a stream, or return the existing one if its configuration matches.

    Raises :class:`~durable_streams.exceptions.Conflict` if it does not.
    """
    payload = _payload(content_type, data, allow_empty=True)
    _, meta = storage.create_stream(
        path,
        content_type=content_type,
        ttl_seconds=ttl_seconds,
        expires_at=expires_at,
        closed=closed,
        payload=payload,
    )
    return meta


def append(
    path: str,
    data: Any,
    *,
    content_type: str | None = None,
    close: bool = False,
    stream_seq: str | None = None,
    producer: Producer | None = None,
) -> AppendResult:
    """Append ``data`` (and close the stream if ``close``). ``content_type``
    defaults to the stream's own."""
    if content_type is None:
        content_type = storage.require_stream(path).content_type
    payload = _payload(content_type, data, allow_empty=False)
    return storage.append(
        path,
        content_type=content_type,
        payload=payload,
        close=close,
        stream_seq=stream_seq,
        producer=producer,
    )


def close(path: str, *, data: Any = None, producer: Producer | None = None) -> AppendResult:
    """Close the stream, optionally appending a final ``data``."""
    return append(path, data, close=True, producer=producer)


def read(path: str, offset: str = offsets.BEGINNING, *, max_bytes: int | None = None) -> ReadResult:
    """Read one chunk from ``offset`` (a token, ``-1`` or ``now``).

    Follow ``result.next_offset`` until ``result.up_to_date`` to read it all.
    """
    return storage.read(path, offsets.parse(offset), max_bytes=max_bytes)


def read_json(path: str, offset: str = offsets.BEGINNING) -> tuple[list[Any], str]:
    """All messages of a JSON stream from ``offset``, and the offset after them."""
    messages: list[Any] = []
    while True:
        result = read(path, offset)
        messages.extend(json.loads(result.body))
        offset = result.next_offset
        if result.up_to_date:
            return messages, offset


def head(path: str) -> StreamMeta:
    """The stream's metadata; raises NotFound/Gone."""
    return storage.require_stream(path)


def delete(path: str) -> None:
    """Delete the stream and its data."""
    storage.delete_stream(path)


async def acreate_stream(
    path: str,
    *,
    content_type: str = content.DEFAULT_CONTENT_TYPE,
    ttl_seconds: int | None = None,
    expires_at: dt.datetime | None = None,
    closed: bool = False,
    data: Any = None,
) -> StreamMeta:
    """:func:`create_stream` on the event loop."""
    payload = _payload(content_type, data, allow_empty=True)
    _, meta = await storage.acreate_stream(
        path,
        content_type=content_type,
        ttl_seconds=ttl_seconds,
        expires_at=expires_at,
        closed=closed,
        payload=payload,
    )
    return meta


async def aappend(
    path: str,
    data: Any,
    *,
    content_type: str | None = None,
    close: bool = False,
    stream_seq: str | None = None,
    producer: Producer | None = None,
) -> AppendResult:
    """:func:`append` on the event loop, through the views' group commit."""
    if content_type is None:
        content_type = (await storage.arequire_stream(path)).content_type
    payload = _payload(content_type, data, allow_empty=False)
    request = AppendRequest(
        path,
        content_type=content_type,
        payload=payload,
        close=close,
        stream_seq=stream_seq,
        producer=producer,
    )
    return await groupcommit.append(request)


async def aclose(path: str, *, data: Any = None, producer: Producer | None = None) -> AppendResult:
    """:func:`close` on the event loop."""
    return await aappend(path, data, close=True, producer=producer)


async def aread(
    path: str, offset: str = offsets.BEGINNING, *, max_bytes: int | None = None
) -> ReadResult:
    """:func:`read` on the event loop."""
    return await storage.aread(path, offsets.parse(offset), max_bytes=max_bytes)


async def ahead(path: str) -> StreamMeta:
    """:func:`head` on the event loop."""
    return await storage.arequire_stream(path)


async def adelete(path: str) -> None:
    """:func:`delete` on the event loop."""
    await storage.adelete_stream(path)
