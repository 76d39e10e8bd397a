"""Waking live readers (long-poll and SSE) when a stream changes.

Every append issues ``pg_notify(channel, stream_id)`` inside its transaction,
so Postgres delivers it only on commit, to every process. Each process (each
event loop) keeps one LISTEN connection and an in-memory map from stream id to
the readers waiting on it. A woken reader always re-reads from the database:
a notification is a hint, never data. While the listener is disconnected,
readers fall back to re-reading every ``FALLBACK_POLL_INTERVAL`` seconds, and
every reconnect wakes all readers for a safety re-read, so a notification
lost during an outage delays a reader but never strands it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from .conf import ds_settings
from .storage import connection_params

logger = logging.getLogger("durable_streams.live")


class Listener:
    """The per-process LISTEN connection and its dispatcher."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._connected = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._woken_at: dict[int, float] = {}
        self.notifications = 0

    @property
    def healthy(self) -> bool:
        return self._connected.is_set()

    async def start(self, wait: float = 5.0) -> None:
        """Start listening (once) and wait until LISTEN is in effect."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="durable-streams-listener")
        if not self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._connected.clear()

    def subscribe(self, stream_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[stream_id].add(event)
        return event

    def unsubscribe(self, stream_id: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(stream_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[stream_id]
                self._woken_at.pop(stream_id, None)

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def wake(self, stream_id: int) -> None:
        waiters = self._waiters.get(stream_id)
        if waiters:
            self._woken_at[stream_id] = time.monotonic()
            for event in waiters:
                event.set()

    def wake_all(self) -> None:
        for stream_id in list(self._waiters):
            self.wake(stream_id)

    def woken_at(self, stream_id: int) -> float:
        """When readers of ``stream_id`` were last woken (monotonic clock)."""
        return self._woken_at.get(stream_id, 0.0)

    async def _run(self) -> None:
        delay = 0.1
        channel = ds_settings.NOTIFY_CHANNEL
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(**connection_params(), autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._connected.set()
                    delay = 0.1
                    # Anything committed while we were not listening: re-read.
                    self.wake_all()
                    async for note in conn.notifies():
                        self.notifications += 1
                        try:
                            self.wake(int(note.payload))
                        except ValueError:
                            logger.warning("ignoring notification %r", note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("stream notification listener lost: %s", exc)
            self._connected.clear()
            self.wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Listener] = (
    weakref.WeakKeyDictionary()
)


def get_listener() -> Listener:
    """The listener of the running event loop."""
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is None:
        listener = _listeners[loop] = Listener()
    return listener


class Watch:
    """A subscription of one reader to one stream's changes."""

    def __init__(self, listener: Listener, stream_id: int, event: asyncio.Event) -> None:
        self._listener = listener
        self._stream_id = stream_id
        self._event = event
        # Reads started after this instant see every commit that woke us.
        self.woken_at = time.monotonic()

    @property
    def healthy(self) -> bool:
        """Whether notifications are flowing (else callers poll)."""
        return self._listener.healthy

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a change; True if woken.

        Returns early (False) while the listener is down, so the caller
        re-reads on the fallback interval.
        """
        if seconds <= 0:
            return False
        if not self._listener.healthy:
            seconds = min(seconds, float(ds_settings.FALLBACK_POLL_INTERVAL))
        try:
            # asyncio.timeout, not wait_for: no extra task per wait, which
            # matters with thousands of readers woken at once.
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        self.woken_at = self._listener.woken_at(self._stream_id)
        return True


@contextlib.asynccontextmanager
async def watch(stream_id: int) -> AsyncIterator[Watch]:
    """Subscribe to a stream's changes. Subscribe *before* reading, so an
    append that commits between the read and the wait still wakes the reader."""
    listener = get_listener()
    await listener.start()
    event = listener.subscribe(stream_id)
    try:
        yield Watch(listener, stream_id, event)
    finally:
        listener.unsubscribe(stream_id, event)


def next_cursor(client_cursor: str | None) -> str:
    """The ``Stream-Cursor`` for a live response (spec 10.1).

    The current interval number; if the client already holds that interval or
    a later one, a value strictly greater than the client's, by a random jitter
    of 1-3600 seconds, so CDN cache keys always move forward.
    """
    interval = int(ds_settings.CURSOR_INTERVAL)
    current = int((time.time() - int(ds_settings.CURSOR_EPOCH)) // interval)
    try:
        previous = int(client_cursor) if client_cursor else None
    except ValueError:
        previous = None
    if previous is not None and previous >= current:
        return str(previous + max(1, random.randint(1, 3600) // interval))
    return str(current)
