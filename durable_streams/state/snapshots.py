"""Snapshots: the current rows of registered models, written into their streams.

A snapshot appends ``snapshot-start``, one ``insert`` per current row, and
``snapshot-end``, in one transaction. A rebuild (``reset=True``) first appends
``reset``: clients clear their state and the snapshot that follows in the same
transaction refills it, so they never see the stream empty.

Consistency with concurrent writers: the first append locks the stream row
and keeps it locked until commit, and the rows are read only after that. A
writer that committed earlier has its events before the snapshot; one still
running waits for the lock and appends after it, and the snapshot reads the
rows it has not committed yet as they were. So the snapshot plus the events
after it always equal the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Model

from ..conf import ds_settings
from . import emission, events
from .registration import Registration, StateError, registrations

__all__ = ["SnapshotResult", "snapshot", "snapshot_all", "stream_paths"]

# Rows read per query while a snapshot walks a table.
ROWS_PER_QUERY = 2000


@dataclass(frozen=True)
class SnapshotResult:
    """What one stream's snapshot wrote."""

    stream: str
    rows: int
    reset: bool


def _selected(models_: Iterable[type[Model]] | None) -> list[Registration]:
    if models_ is None:
        return registrations()
    chosen = []
    for model in models_:
        regs = registrations(model)
        if not regs:
            raise StateError(f"{model._meta.label} is not registered for streaming")
        chosen.extend(regs)
    return chosen


def _rows(reg: Registration, path: str) -> Iterator[Model]:
    """The rows of ``reg`` that belong in stream ``path``, in primary key order."""
    alias = ds_settings.DATABASE_ALIAS
    if reg.fixed_stream is not None:
        if reg.fixed_stream != path:
            return
        qs = reg.model._base_manager.using(alias).all()
    elif reg.rows_for_stream is not None:
        qs = reg.rows_for_stream(path)
        if qs is None:
            return  # not one of this registration's streams
        qs = qs.using(alias)
    else:
        qs = reg.model._base_manager.using(alias).all()
    for row in qs.order_by("pk").iterator(chunk_size=ROWS_PER_QUERY):
        if reg.fixed_stream is not None or reg.stream_for(row) == path:
            yield row


def snapshot(
    path: str,
    *,
    models: Iterable[type[Model]] | None = None,
    reset: bool = False,
) -> SnapshotResult:
    """Write a snapshot of stream ``path``: every current row that the
    registrations of ``models`` (default: all) route to it.

    With ``reset``, a ``reset`` event comes first, so clients drop what they
    had (rows deleted behind the hooks' back, e.g. by raw SQL, disappear).
    Runs in its own transaction (or a savepoint of the caller's).
    """
    regs = _selected(models)
    alias = ds_settings.DATABASE_ALIAS
    with transaction.atomic(using=alias):
        head = [events.reset()] if reset else []
        head.append(events.snapshot_start())
        # This append locks the stream until commit; rows are read after it.
        emission.append_events(path, head)
        stamp = emission.headers()
        count = 0
        batch: list[dict] = []
        for reg in regs:
            for row in _rows(reg, path):
                batch.append(reg.insert(row, stamp)[1])
                count += 1
                if len(batch) >= emission.APPEND_CHUNK:
                    emission.append_events(path, batch)
                    batch = []
        batch.append(events.snapshot_end())
        emission.append_events(path, batch)
    return SnapshotResult(path, count, reset)


def stream_paths(models: Iterable[type[Model]] | None = None) -> list[str]:
    """Every stream the registrations of ``models`` (default: all) write to:
    fixed paths, and the paths per-instance streams give the current rows."""
    paths: set[str] = set()
    alias = ds_settings.DATABASE_ALIAS
    for reg in _selected(models):
        if reg.fixed_stream is not None:
            paths.add(reg.fixed_stream)
            continue
        rows = reg.model._base_manager.using(alias).order_by("pk")
        for row in rows.iterator(chunk_size=ROWS_PER_QUERY):
            paths.add(reg.stream_for(row))
    return sorted(paths)


def snapshot_all(
    models: Sequence[type[Model]] | None = None, *, reset: bool = False
) -> list[SnapshotResult]:
    """Snapshot every stream of ``models`` (default: all registered), one
    transaction per stream."""
    return [snapshot(path, models=models, reset=reset) for path in stream_paths(models)]
