"""Emission: the events of a change, appended in the caller's transaction.

Events are appended with the in-process storage API, which runs on the
caller's database connection. So an event is part of the transaction that
changed the row: a rollback (or a savepoint rollback) drops exactly the events
written inside it, a commit makes them visible and wakes live readers
(Postgres ``NOTIFY`` is transactional), and the stream row lock that every
append takes serialises the writers of one stream, so offset order is commit
order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from django.db import models

from .. import api
from ..conf import ds_settings
from ..content import JSON
from ..exceptions import Conflict, NotFound
from . import events
from .registration import StateError
from .txid import current_txid

__all__ = [
    "append_events",
    "collecting",
    "emit",
    "fetch",
    "headers",
    "is_collecting",
    "is_paused",
    "paused",
]

# Events per append: bounds the size of one stored segment for bulk operations.
APPEND_CHUNK = 1000
# Primary keys per query when bulk operations read rows back.
FETCH_CHUNK = 2000

# While set, change events are collected here instead of appended (bulk deletes).
_buffer: ContextVar[list[tuple[str, dict]] | None] = ContextVar(
    "durable_streams_state_buffer", default=None
)
_paused: ContextVar[bool] = ContextVar("durable_streams_state_paused", default=False)


def headers() -> dict[str, str]:
    """``txid`` (if one is set) and ``timestamp`` headers for events emitted now."""
    stamped = {"timestamp": events.timestamp()}
    txid = current_txid()
    if txid is not None:
        stamped["txid"] = txid
    return stamped


def append_events(path: str, batch: Sequence[dict]) -> None:
    """Append State Protocol events to ``path`` in the caller's transaction,
    creating the stream (``application/json``) if it does not exist."""
    for start in range(0, len(batch), APPEND_CHUNK):
        chunk = list(batch[start : start + APPEND_CHUNK])
        try:
            api.append(path, chunk, content_type=JSON)
        except NotFound:
            # The failed append rolled back only its own savepoint.
            api.create_stream(path, content_type=JSON)
            api.append(path, chunk, content_type=JSON)


def create_registered_streams(using: str) -> None:
    """Create the fixed-path streams of registered models that do not exist yet.

    Connected to ``post_migrate``: a client that loads a model's stream before
    its first change reads it as empty and valid instead of 404. Streams
    chosen per instance (a function ``stream``) are only known once a row
    exists, so they are still created on demand. A path that exists with
    another configuration is left as it is.
    """
    from django.db import connections

    from ..models import Stream
    from .registration import registrations

    if using != ds_settings.DATABASE_ALIAS:
        return
    if Stream._meta.db_table not in connections[using].introspection.table_names():
        return  # migrated to a state before the app's tables exist
    for path in sorted({r.stream for r in registrations() if isinstance(r.stream, str)}):
        try:
            api.create_stream(path, content_type=JSON)
        except Conflict:
            pass  # created by hand with other settings: not ours to change


def emit(changes: Iterable[tuple[str, dict]], using: str) -> None:
    """Append ``(stream, event)`` pairs, grouped per stream in order."""
    pending = _buffer.get()
    if pending is not None:
        pending.extend(changes)
        return
    _check_alias(using)
    by_stream: dict[str, list[dict]] = {}
    for path, event in changes:
        by_stream.setdefault(path, []).append(event)
    # Streams are locked in path order, like storage's batches, to avoid deadlocks.
    for path in sorted(by_stream):
        append_events(path, by_stream[path])


def _check_alias(using: str) -> None:
    alias = ds_settings.DATABASE_ALIAS
    if using != alias:
        raise StateError(
            f"a streamed model was written on database {using!r} but streams live on "
            f"{alias!r}: an event must commit in the same transaction as its row"
        )


@contextlib.contextmanager
def collecting() -> Iterator[list[tuple[str, dict]]]:
    """Collect the events emitted inside the block instead of appending them."""
    pending: list[tuple[str, dict]] = []
    token = _buffer.set(pending)
    try:
        yield pending
    finally:
        _buffer.reset(token)


def is_collecting() -> bool:
    """Whether events are being collected (inside :func:`collecting`)."""
    return _buffer.get() is not None


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Emit nothing for changes made inside the block.

    For imports and data migrations that a snapshot (or reset and snapshot)
    will publish afterwards; clients see nothing of the block until then.
    """
    token = _paused.set(True)
    try:
        yield
    finally:
        _paused.reset(token)


def is_paused() -> bool:
    return _paused.get()


def fetch(
    model: type[models.Model], using: str, pks: Iterable[Any], *, lock: bool = False
) -> dict[Any, models.Model]:
    """Rows of ``model`` by primary key, read on ``using`` (locked if ``lock``)."""
    pks = list(pks)
    found: dict[Any, models.Model] = {}
    for start in range(0, len(pks), FETCH_CHUNK):
        qs = model._base_manager.using(using).filter(pk__in=pks[start : start + FETCH_CHUNK])
        if lock:
            qs = qs.select_for_update(of=("self",)).order_by("pk")
        found.update((obj.pk, obj) for obj in qs)
    return found
