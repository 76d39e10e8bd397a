"""The ``Stream-Cursor`` of live responses (spec 10.1).

Live reads at the same offset would share one CDN cache entry forever; the
cursor, echoed back by clients as ``?cursor=``, makes each interval's request
URL distinct. Cursors are interval numbers counted from a fixed epoch and
never go backwards for a client, so cache keys always move forward.

A client that already holds the current interval (or a later one) gets its
cursor plus a jitter, as the spec asks. The jitter is a function of the
client's cursor, not a random draw: readers that held the same cursor (one
cache key) land on the same next cursor, so after an idle timeout they still
share one cache key and a cache in front still collapses them into one
request. Every process computes the same value.
"""

from __future__ import annotations

import time
import zlib

from .conf import ds_settings

# The reference server's jitter range, in seconds.
_JITTER_SECONDS = 3600
# Digits of the longest client cursor read (an interval number in a few digits).
_MAX_DIGITS = 20


def jitter(previous: int, interval: int) -> int:
    """The step, in whole intervals (at least 1), past a client's cursor ``previous``.

    Spread over 1-3600 seconds like the reference server's random jitter, but
    the same for every reader (and every process) that sent ``previous``.
    """
    seconds = 1 + zlib.crc32(str(previous).encode()) % _JITTER_SECONDS
    return max(1, int(seconds // interval))


def next_cursor(client_cursor: str | None) -> str:
    """The cursor for a live response to a client that sent ``client_cursor``.

    The current interval number; if the client already holds that interval or
    a later one, a value strictly greater than the client's, by
    :func:`jitter`. Anything unparseable is ignored.
    """
    interval = ds_settings.CURSOR_INTERVAL
    current = int((time.time() - ds_settings.CURSOR_EPOCH) // interval)
    previous = None
    # A longer value is no cursor of ours; its successor could even pass
    # int()'s 4,300-digit limit when turned back into text.
    if client_cursor and len(client_cursor) <= _MAX_DIGITS:
        try:
            previous = int(client_cursor)
        except ValueError:
            previous = None
    if previous is not None and previous >= current:
        return str(previous + jitter(previous, interval))
    return str(current)
