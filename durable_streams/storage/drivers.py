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
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connections, transaction

from ..conf import ds_settings

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


async def _open_pool():
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        kwargs={**connection_params(), "autocommit": True},
        min_size=1,
        max_size=ds_settings.DB_POOL_SIZE,
        open=False,
        name="durable-streams",
    )
    await pool.open()
    return pool


async def _pool():
    loop = asyncio.get_running_loop()
    task = _pools.get(loop)
    if task is None or (task.done() and task.exception() is not None):
        task = _pools[loop] = loop.create_task(_open_pool())
    return await asyncio.shield(task)


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


async def run_async(op: Op[T], *, atomic: bool = False) -> T:
    """Run an operation on the event loop's connection pool (or, under WSGI,
    on Django's connection of the request thread)."""
    if _django_connection.get():
        from asgiref.sync import sync_to_async

        return await sync_to_async(run_sync)(op, atomic=atomic)
    pool = await _pool()
    # Pipeline mode: statements whose results are not needed (the writes)
    # go out without waiting a round trip each; a fetch syncs.
    async with pool.connection() as conn, conn.pipeline():
        block = conn.transaction() if atomic else contextlib.nullcontext()
        async with block:
            cursor = conn.cursor(binary=True)
            try:
                query = next(op)
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
                    query = op.send(result)
            except StopIteration as stop:
                return stop.value


def _ping() -> Op[None]:
    yield Q("SELECT 1", None, "one")


async def aping() -> None:
    """One round trip on the event loop's pool (health checks)."""
    await run_async(_ping())
