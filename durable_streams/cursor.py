"""The ``Stream-Cursor`` of live responses (spec 10.1).

Live reads at the same offset would share one CDN cache entry forever; the
cursor, echoed back by clients as ``?cursor=``, makes each interval's request
URL distinct. Cursors are interval numbers counted from a fixed epoch and
never go backwards for a client, so cache keys always move forward.
"""

from __future__ import annotations

import random
import time

from .conf import ds_settings

# The reference server's jitter range, in seconds.
_JITTER_SECONDS = 3600
# Digits of the longest client cursor read (an interval number in a few digits).
_MAX_DIGITS = 20


def next_cursor(client_cursor: str | None) -> str:
    """The cursor for a live response to a client that sent ``client_cursor``.

    The current interval number; if the client already holds that interval or
    a later one, a value strictly greater than the client's, by a random jitter
    of 1-3600 seconds in whole intervals. Anything unparseable is ignored.
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
        return str(previous + max(1, random.randint(1, _JITTER_SECONDS) // interval))
    return str(current)
