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
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from asgiref.sync import AsyncToSync
from django.db import connections, transaction
from psycopg_pool import PoolTimeout

from ..conf import ds_settings
from ..exceptions import ServiceUnavailable
from . import arrays

logger = logging.getLogger("durable_streams.storage")

# Seconds a client is asked to wait (Retry-After) while the database is
# unreachable: the server tries to reach it again at least that often.
RETRY_AFTER = 1
# The longest pause between two attempts to reach a database that is down.
RECONNECT_MAX_DELAY = 0.5

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


def _failing(pool) -> bool:
    """Whether ``pool`` has failed to connect (its attempts may be backing off)."""
    return pool.get_stats().get("connections_errors", 0) > 0


class _Database:
    """The database as one event loop sees it: its connection pool, and while
    the database cannot be reached, the one task that tries to reach it again.

    While the database is down there is no pool: a request waits for the next
    attempt (at most :data:`RECONNECT_MAX_DELAY` away, see
    :func:`reconnect_delays`) instead of ``DB_POOL_TIMEOUT``, and answers 503 if
    it fails. psycopg_pool's own back-off doubles up to minutes; here, once an
    attempt succeeds, a fresh pool opens and connects at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.down = False
        self._pool: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None
        # Resolved with the outcome of the next attempt (True: reachable).
        self._attempt: asyncio.Future[bool] | None = None

    async def pool(self):
        task = self._pool
        if task is not None and task.done():
            if task.exception() is None:
                return task.result()  # the usual case: no shield (a future) per op
            task = None
        if task is None:
            task = self._pool = self.loop.create_task(_open_pool())
        return await asyncio.shield(task)

    def suspect(self) -> None:
        """A request could not reach the database: find out, once, whether it is down."""
        if self._probe is None:
            self._probe = self.loop.create_task(self._reconnect(), name="durable-streams-reconnect")

    async def back(self) -> bool:
        """While down: whether the next attempt reaches the database."""
        if not self.down:
            return True
        self.suspect()
        if self._attempt is None:
            self._attempt = self.loop.create_future()
        return await asyncio.shield(self._attempt)

    def _settle(self, reachable: bool) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None and not attempt.done():
            attempt.set_result(reachable)

    async def _reconnect(self) -> None:
        reachable = False
        try:
            delays = reconnect_delays()
            while not await self._reachable():
                if not self.down:
                    self.down = True
                    logger.warning("database unreachable: answering 503 until it is back")
                    # Requests waiting for a connection answer 503 now.
                    self._close_pool()
                self._settle(False)
                await asyncio.sleep(next(delays))
            if self.down or self._pool_failing():
                # A fresh pool connects at once; the old one may be backing off.
                self._close_pool()
                await self.pool()
            if self.down:
                logger.warning("database reachable again")
            self.down = False
            reachable = True
        finally:
            self._probe = None
            self._settle(reachable)

    async def _reachable(self) -> bool:
        try:
            async with asyncio.timeout(ds_settings.DB_POOL_TIMEOUT):
                conn = await psycopg.AsyncConnection.connect(**connection_params())
        except (psycopg.OperationalError, TimeoutError) as exc:
            logger.debug("database not reachable: %s", exc)
            return False
        await conn.close()
        return True

    def _pool_failing(self) -> bool:
        task = self._pool
        if task is None or not task.done() or task.exception() is not None:
            return False
        return _failing(task.result())

    def _close_pool(self) -> None:
        task, self._pool = self._pool, None
        if task is not None:
            closing = self.loop.create_task(_close(task))
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        task, self._pool = self._pool, None
        if task is not None:
            await (await task).close()


def reconnect_delays() -> Iterator[float]:
    """Seconds to wait between attempts to reach the database again: short at
    first (a restart is often over at once), then capped at
    :data:`RECONNECT_MAX_DELAY` so a database that comes back is noticed within
    that, however long it was away. The pool and the notification listener
    (:mod:`durable_streams.live`) both use it."""
    delay = 0.1
    while True:
        yield delay
        delay = min(delay * 2, RECONNECT_MAX_DELAY)


_databases: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Database] = (
    weakref.WeakKeyDictionary()
)
_closing: set[asyncio.Task] = set()


def _database() -> _Database:
    loop = asyncio.get_running_loop()
    database = _databases.get(loop)
    if database is None:
        database = _databases[loop] = _Database(loop)
    return database


async def _configure(conn) -> None:
    """A new pool connection's adaptation: typed arrays dump in binary at once."""
    arrays.register(conn)


async def _open_pool():
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        kwargs={**connection_params(), "autocommit": True},
        min_size=1,
        max_size=ds_settings.DB_POOL_SIZE,
        open=False,
        name="durable-streams",
        check=_check,
        configure=_configure,
        # How long a request waits for a connection; then 503 (a database
        # that does not answer must not hold requests for the default 30 s).
        timeout=ds_settings.DB_POOL_TIMEOUT,
    )
    # Not waiting for the first connection: requests wait for it (up to
    # DB_POOL_TIMEOUT) while the pool connects.
    await pool.open(wait=False)
    return pool


async def _close(task: asyncio.Task) -> None:
    with contextlib.suppress(Exception):
        await (await task).close(timeout=1.0)


async def close_pool() -> None:
    """Close the running loop's connection pool (tests, shutdown)."""
    database = _databases.pop(asyncio.get_running_loop(), None)
    if database is not None:
        await database.close()


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
    """Whether async operations run on Django's connection of the calling thread.

    True inside :func:`on_django_connection` (a WSGI server serves the
    request) and on an event loop made for one call by ``async_to_sync``
    from sync code (Django runs async views so under WSGI; sync code calls
    the async API so): the loop ends with the call, and a pool opened on it
    would keep its connections for nothing. The calling thread's connection
    is the one the sync API uses, bounded by the threads and closed by
    Django (``CONN_MAX_AGE``) at the end of a request.
    """
    if _django_connection.get():
        return True
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return loop in AsyncToSync.loop_thread_executors


async def run_async(op: Op[T], *, atomic: bool = False, resend: bool = True) -> T:
    """Run an operation on the event loop's connection pool (or, under WSGI
    and from sync code through ``async_to_sync``, on Django's connection of
    the calling thread: :func:`is_on_django_connection`).

    A connection that fails before the operation's first query has answered
    has done nothing (no commit was sent), so that query is sent again once on
    another connection; ``resend=False`` for an operation whose first query
    commits by itself (a write outside ``atomic``), which may have taken
    effect. Any other failure to reach the database raises
    :class:`~durable_streams.exceptions.ServiceUnavailable` (503 with
    ``Retry-After``), never a bare database error.
    """
    if is_on_django_connection():
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
    database = _database()
    # Checked before awaiting: no coroutine per query while the database is up.
    if database.down and not await database.back():
        raise ServiceUnavailable("database unavailable", retry_after=RETRY_AFTER)
    try:
        pool = await database.pool()
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
        database.suspect()
        raise ServiceUnavailable("database unavailable", retry_after=RETRY_AFTER) from exc


class _FirstQueryFailed(Exception):
    def __init__(self, error: psycopg.OperationalError) -> None:
        self.error = error


async def _run_on_pool(pool, op: Op[T], query: Q, atomic: bool) -> T:
    answered = [False]
    try:
        # getconn/putconn, not pool.connection(): that context also enters the
        # connection's own, whose commit on exit takes the connection's lock for
        # nothing in autocommit; putconn rolls back or discards a connection
        # left in a transaction or a query, as the context's exit would.
        conn = await pool.getconn()
        try:
            if atomic:
                # BEGIN and the writes go out together, without a round trip each.
                async with conn.pipeline(), conn.transaction():
                    return await _drive(conn, op, query, answered, piped=True)
            return await _drive(conn, op, query, answered, piped=False)
        finally:
            await pool.putconn(conn)
    except psycopg.OperationalError as exc:
        if answered[0] or isinstance(exc, PoolTimeout):
            raise
        raise _FirstQueryFailed(exc) from exc


async def _drive(conn, op: Op[T], query: Q, answered: list[bool], *, piped: bool) -> T:
    """Run ``op``'s queries on ``conn`` from ``query`` on; ``answered[0]`` turns
    True once one has answered."""
    cursor = conn.cursor(binary=True)
    try:
        while True:
            if not piped and (query.many or query.fetch == "none"):
                # Pipeline mode from the first query whose result is not
                # needed: it goes out without waiting a round trip, and the
                # next fetch syncs. Until then a query that fetches costs the
                # same round trip either way, and pipeline mode costs calls.
                async with conn.pipeline():
                    return await _drive(conn, op, query, answered, piped=True)
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
            answered[0] = True
            query = op.send(result)
    except StopIteration as stop:
        return stop.value


def _ping() -> Op[None]:
    yield Q("SELECT 1", None, "one")


async def aping() -> None:
    """One round trip on the event loop's pool (health checks)."""
    await run_async(_ping())
