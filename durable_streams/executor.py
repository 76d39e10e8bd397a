"""Run storage calls from async code on a bounded pool of database threads.

Each thread keeps its own Django connection for its whole life, whatever the
project's ``CONN_MAX_AGE`` (Django's default of 0 would reconnect on every
call and cut throughput several-fold), so the connections a process opens for
stream traffic are bounded by ``DB_THREADS`` however many readers wait:
waiting readers hold no thread and no connection, only the call that reads
does. A connection that errored and no longer answers is replaced.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import OperationalError, connections

from .conf import ds_settings
from .exceptions import ServiceUnavailable

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=ds_settings.DB_THREADS, thread_name_prefix="durable-streams-db"
                )
    return _pool


def _ensure_usable() -> None:
    """Django's close_if_unusable_or_obsolete() without the age limit."""
    conn = connections[ds_settings.DATABASE_ALIAS]
    if conn.connection is None:
        return
    if conn.in_atomic_block or conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]:
        conn.close()  # left mid-transaction by a failed call: start clean
    elif conn.errors_occurred:
        if conn.is_usable():
            conn.errors_occurred = False
        else:
            conn.close()  # e.g. the database restarted: reconnect on next use


def _call(fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    _ensure_usable()
    return fn(*args, **kwargs)


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` run on a database thread.

    A database that cannot be reached raises
    :class:`~durable_streams.exceptions.ServiceUnavailable` (503), as on the
    async pool (:mod:`durable_streams.storage.drivers`).
    """
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_executor(), functools.partial(_call, fn, args, kwargs))
    except OperationalError as exc:
        from .storage.drivers import RETRY_AFTER

        raise ServiceUnavailable("database unavailable", retry_after=RETRY_AFTER) from exc
