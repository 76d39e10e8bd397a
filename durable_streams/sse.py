"""Server-sent events of a followed stream (spec 5.7): the ``live=sse`` body.

Each read becomes a ``data`` event (text as is, anything else base64) and a
``control`` event with the next offset, the cursor and the up-to-date and
closed markers, written together.
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator

from .conf import ds_settings
from .exceptions import StreamError
from .live import IDLE, Follow
from .storage import ReadResult

logger = logging.getLogger("durable_streams.live")

KEEP_ALIVE = b": keep-alive\n\n"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# id(read) -> that read's renderings; an entry goes with its read.
_renderings: dict[int, dict] = {}


def _event(event: str, payload: str) -> str:
    # "data:" then the line; a line that itself starts with a space gets the
    # one separator space SSE parsers strip, so its own space survives.
    lines = "".join(
        f"data: {line}\n" if line.startswith(" ") else f"data:{line}\n"
        for line in _LINE_BREAK.split(payload)
    )
    return f"event: {event}\n{lines}\n"


def _cache(result: ReadResult) -> dict:
    key = id(result)
    cache = _renderings.get(key)
    if cache is None:
        cache = _renderings[key] = {}
        weakref.finalize(result, _renderings.pop, key, None)
    return cache


def render(result: ReadResult, cursor: str, decoder, text_mode: bool) -> bytes:
    """A read's data event and its control event, in one write.

    One append wakes every reader of a stream and they share one read, so the
    rendering is shared too: keyed by everything that can differ between
    readers (the cursor, and bytes of a split UTF-8 character left over from
    the reader's previous chunk), with the decoder state it leaves behind.
    """
    pending = decoder.getstate() if text_mode else None
    renderings = _renderings.get(id(result)) or _cache(result)
    cached = renderings.get((cursor, pending))
    if cached is not None:
        out, state = cached
        if state != pending:
            decoder.setstate(state)
        return out
    text = ""
    if result.units:
        if text_mode:
            payload = decoder.decode(result.body)
        else:
            payload = base64.b64encode(result.body).decode("ascii")
        text = _event("data", payload)
    control: dict[str, object] = {"streamNextOffset": result.next_offset}
    if result.closed:
        control["streamClosed"] = True
    else:
        control["streamCursor"] = cursor
    if result.up_to_date:
        control["upToDate"] = True
    out = (text + _event("control", json.dumps(control, separators=(",", ":")))).encode()
    renderings[(cursor, pending)] = (out, decoder.getstate() if text_mode else None)
    return out


async def events(follow: Follow, cursor: str, text_mode: bool) -> AsyncIterator[bytes]:
    """The response body: events for every read of ``follow``, keep-alive
    comments while idle. Ends when the follow does, errors included (a
    stream deleted while followed, a failed database read), and once it has
    carried ``MAX_CHUNK_SIZE`` bytes: the client reconnects from the last
    offset it was sent.

    The byte cap bounds what a client that stops reading costs the server:
    daphne buffers whatever a response writes, however slowly it is read.
    """
    # Chunks may split a UTF-8 sequence; decode incrementally across events.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sent_control = False
    cap = ds_settings.MAX_CHUNK_SIZE
    sent = 0
    async with follow:
        try:
            async for event in follow:
                if event is IDLE:
                    yield KEEP_ALIVE
                    continue
                assert isinstance(event, ReadResult)
                if event.units or not sent_control or event.closed:
                    out = render(event, cursor, decoder, text_mode)
                    yield out
                    sent_control = True
                    sent += len(out)
                    # Never end inside a UTF-8 sequence split by a chunk: the
                    # resumed response would start mid-character.
                    if sent >= cap and not event.closed and not decoder.getstate()[0]:
                        logger.debug("SSE of %r ended after %d bytes", follow.path, sent)
                        return
        except StreamError as exc:
            logger.info("SSE of %r ended: %s", follow.path, exc.message)
