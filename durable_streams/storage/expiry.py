"""The expiry sweep: reclaim the rows of expired streams.

Expired streams already answer 404 (the rule is in :mod:`.deadline`); this
removes them and their data in bounded transactions.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from . import deadline, streams
from .drivers import Op, Q, run_sync
from .schema import COLUMNS, STREAM
from .types import StreamMeta


def _expired_batch(limit: int, now: dt.datetime) -> Op[int]:
    # SKIP LOCKED: streams busy in another transaction wait for the next run.
    rows = yield Q(
        f"SELECT {COLUMNS} FROM {STREAM} WHERE deleted_at IS NULL AND {deadline.expired_sql()}"
        " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
        {"now": now, "limit": limit},
        "all",
    )
    for row in rows:
        yield from streams.remove(StreamMeta.from_row(row), now)
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
        count = run_sync(_expired_batch(batch_size, timezone.now()), atomic=True)
        removed += count
        batches += 1
        if count < batch_size:
            break
    return removed
