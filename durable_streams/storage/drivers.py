"""The two drivers that run storage operations, and the async connection pool.

An operation is a generator that yields the queries it needs (:class:`Q`) and
receives their results; it never touches a connection itself. So each
operation is written once and runs on either driver:

* :func:`run_sync` on the caller's Django connection, so the in-process API
  joins the caller's transaction (the model change streams rely on it);
* :func:`run_async` on a psycopg async connection pool on the event loop,
  for the views and the async API: no thread hop, server-side binding with
  automatically prepared statements, and binary results (bytea arrives as raw
  bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import select
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from django.db import connections, transaction
from psycopg_pool import PoolTimeout

from ..conf import ds_settings
from ..exceptions import ServiceUnavailable

logger = logging.getLogger("durable_streams.storage")

# Seconds a client is asked to wait (Retry-After) while the database is unreachable.
RETRY_AFTER = 2

T = TypeVar("T")


@dataclass(frozen=True)
class Q:
    """One query an operation asks its driver to run."""

    sql: str
    params: Sequence | dict | None = None
    # "none", "one" (a row or None) or "all" (a list of rows)
    fetch: str = "none"
    # params is a list of parameter sets (executemany)
    many: bool = False


Op = Generator[Q, Any, T]


def run_sync(op: Op[T], *, atomic: bool = False) -> T:
    """Run an operation on the Django connection (in the caller's transaction)."""
    alias = ds_settings.DATABASE_ALIAS
    block = transaction.atomic(using=alias) if atomic else contextlib.nullcontext()
    with block, connections[alias].cursor() as cursor:
        try:
            query = next(op)
            while True:
                if query.many:
                    cursor.executemany(query.sql, query.params)
                    result = None
                else:
                    cursor.execute(query.sql, query.params)
                    result = _fetch_result(cursor, query.fetch)
                query = op.send(result)
        except StopIteration as stop:
            return stop.value


def _fetch_result(cursor, fetch: str):
    if fetch == "one":
        return cursor.fetchone()
    if fetch == "all":
        return cursor.fetchall()
    return None


def connection_params() -> dict:
    """Connection parameters of the stream database, for raw psycopg connections."""
    params = dict(connections[ds_settings.DATABASE_ALIAS].get_connection_params())
    # Keys Django adds that only make sense for its own synchronous connections.
    for key in ("context", "cursor_factory", "server_side_binding", "assume_role"):
        params.pop(key, None)
    return params


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = (
    weakref.WeakKeyDictionary()
)


def _has_input(conn) -> bool:
    """Whether an idle connection's socket has something to read.

    Nothing arrives on an idle connection of ours unless the server ended
    the session (a restart: its FATAL message, then EOF). One poll() syscall,
    not a round trip, so checking every connection before use stays cheap.
    """
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return True  # closed
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


async def _check(conn) -> None:
    """The pool's check before handing out a connection: a dead one raises
    (and is replaced) instead of failing the request that would get it."""
    from psycopg_pool import AsyncConnectionPool

    if conn.closed or _has_input(conn):
        await AsyncConnectionPool.check_connection(conn)


async def _open_pool():
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        kwargs={**connection_params(), "autocommit": True},
        min_size=1,
        max_size=ds_settings.DB_POOL_SIZE,
        open=False,
        name="durable-streams",
        check=_check,
        # How long a request waits for a connection; then 503 (a database
        # that does not answer must not hold requests for the default 30 s).
        timeout=ds_settings.DB_POOL_TIMEOUT,
    )
    # Not waiting for the first connection: with the database down, requests
    # answer 503 after DB_POOL_TIMEOUT while the pool keeps reconnecting.
    await pool.open(wait=False)
    return pool


async def _pool():
    loop = asyncio.get_running_loop()
    task = _pools.get(loop)
    if task is None or (task.done() and task.exception() is not None):
        task = _pools[loop] = loop.create_task(_open_pool())
    return await asyncio.shield(task)


_closing: set[asyncio.Task] = set()


def _failing(pool) -> bool:
    """Whether ``pool`` has failed to connect (not merely been busy)."""
    return pool.get_stats().get("connections_errors", 0) > 0


def _replace_pool(pool) -> None:
    """Start a new pool in place of ``pool``, whose connection attempts time out.

    The pool retries a failed connection with an exponential backoff; after an
    outage of some seconds its next attempt could come long after the database
    is back. A new pool tries at once.
    """
    loop = asyncio.get_running_loop()
    task = _pools.get(loop)
    if task is None or not task.done() or task.exception() is not None or task.result() is not pool:
        return  # replaced already
    del _pools[loop]
    closing = loop.create_task(pool.close(timeout=1.0))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


async def close_pool() -> None:
    """Close the running loop's connection pool (tests, shutdown)."""
    task = _pools.pop(asyncio.get_running_loop(), None)
    if task is not None:
        await (await task).close()


# Set while a WSGI server runs the request (see :func:`on_django_connection`).
_django_connection: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "durable_streams_django_connection", default=False
)


@contextlib.contextmanager
def on_django_connection():
    """Run the async operations of this context on Django's own connection.

    Under WSGI, Django runs each async view on an event loop made for that one
    request: a pool opened there would outlive its loop and leak its
    connections. Django's connection of the request thread is closed (or
    kept, per ``CONN_MAX_AGE``) by Django at the end of the request.
    """
    token = _django_connection.set(True)
    try:
        yield
    finally:
        _django_connection.reset(token)


def is_on_django_connection() -> bool:
    """True inside :func:`on_django_connection` (the request is served by WSGI)."""
    return _django_connection.get()


async def run_async(op: Op[T], *, atomic: bool = False, resend: bool = True) -> T:
    """Run an operation on the event loop's connection pool (or, under WSGI,
    on Django's connection of the request thread).

    A connection that fails before the operation's first query has answered
    has done nothing (no commit was sent), so that query is sent again once on
    another connection; ``resend=False`` for an operation whose first query
    commits by itself (a write outside ``atomic``), which may have taken
    effect. Any other failure to reach the database raises
    :class:`~durable_streams.exceptions.ServiceUnavailable` (503 with
    ``Retry-After``), never a bare database error.
    """
    if _django_connection.get():
        from asgiref.sync import sync_to_async
        from django.db import OperationalError

        try:
            return await sync_to_async(run_sync)(op, atomic=atomic)
        except OperationalError as exc:
            raise ServiceUnavailable("database unavailable", retry_after=RETRY_AFTER) from exc
    try:
        query = next(op)
    except StopIteration as stop:
        return stop.value
    pool = None
    try:
        pool = await _pool()
        for attempt in (1, 2):
            try:
                return await _run_on_pool(pool, op, query, atomic)
            except _FirstQueryFailed as failed:
                if attempt == 2 or not resend:
                    raise failed.error from None
                logger.info("retrying on another connection: %s", failed.error)
                # One dead connection usually means a restart: drop the others too.
                await pool.check()
        raise AssertionError("unreachable")
    except psycopg.OperationalError as exc:
        logger.warning("database unavailable: %s", exc)
        if isinstance(exc, PoolTimeout) and pool is not None and _failing(pool):
            _replace_pool(pool)
        raise ServiceUnavailable("database unavailable", retry_after=RETRY_AFTER) from exc


class _FirstQueryFailed(Exception):
    def __init__(self, error: psycopg.OperationalError) -> None:
        self.error = error


async def _run_on_pool(pool, op: Op[T], query: Q, atomic: bool) -> T:
    answered = False
    try:
        # Pipeline mode: statements whose results are not needed (the writes)
        # go out without waiting a round trip each; a fetch syncs.
        async with pool.connection() as conn, conn.pipeline():
            block = conn.transaction() if atomic else contextlib.nullcontext()
            async with block:
                cursor = conn.cursor(binary=True)
                try:
                    while True:
                        if query.many:
                            await cursor.executemany(query.sql, query.params)
                            result = None
                        else:
                            await cursor.execute(query.sql, query.params)
                            if query.fetch == "one":
                                result = await cursor.fetchone()
                            elif query.fetch == "all":
                                result = await cursor.fetchall()
                            else:
                                result = None
                        answered = True
                        query = op.send(result)
                except StopIteration as stop:
                    return stop.value
    except psycopg.OperationalError as exc:
        if answered or isinstance(exc, PoolTimeout):
            raise
        raise _FirstQueryFailed(exc) from exc


def _ping() -> Op[None]:
    yield Q("SELECT 1", None, "one")


async def aping() -> None:
    """One round trip on the event loop's pool (health checks)."""
    await run_async(_ping())
