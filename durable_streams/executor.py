"""Run storage calls from async code on a bounded pool of database threads.

Each thread keeps its own Django connection (subject to ``CONN_MAX_AGE``), so
the number of connections a process opens for async traffic is bounded by
``DB_THREADS`` however many readers are waiting: waiting readers hold no
thread and no connection, only the call that reads does.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections

from .conf import ds_settings

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=int(ds_settings.DB_THREADS), thread_name_prefix="durable-streams-db"
                )
    return _pool


def _call(fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    # Same lifecycle as a Django request: drop broken or expired connections
    # before and after, so a database restart heals on the next call.
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` run on a database thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(_call, fn, args, kwargs))
