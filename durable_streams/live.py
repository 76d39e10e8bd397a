"""Waking live readers (long-poll and SSE) when a stream changes.

Every append issues ``pg_notify(channel, stream_id)`` inside its transaction,
so Postgres delivers it only on commit, to every process. Each process (each
event loop) keeps one LISTEN connection and an in-memory map from stream id to
the readers waiting on it. A woken reader always re-reads from the database:
a notification is a hint, never data. While the listener is disconnected,
readers fall back to re-reading every ``FALLBACK_POLL_INTERVAL`` seconds, and
every reconnect wakes all readers for a safety re-read, so a notification
lost during an outage delays a reader but never strands it.

:class:`Follow` is the one loop that follows a stream: read, wait for a
change, read again. Long-poll, SSE, ``state.afollow`` and ``streams tail``
all use it; deadlines, the listener-down fallback and read errors are
handled there and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from . import storage
from .conf import ds_settings
from .exceptions import StreamError
from .storage import ReadResult, connection_params

logger = logging.getLogger("durable_streams.live")

# How many streams' latest notification the listener remembers for readers
# that subscribe after their first read (see Listener.notified_since).
_RECENT = 4096


class Listener:
    """The per-process LISTEN connection and its dispatcher."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._connected = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._woken_at: dict[int, float] = {}
        self.notifications = 0
        # Stream id -> the ``notifications`` count of its latest notification,
        # for the most recent streams; and the count below which that record is
        # incomplete (entries evicted, or the connection lost or regained).
        self._recent: OrderedDict[int, int] = OrderedDict()
        self._forgotten = 0
        # The subscription engine loops of this event loop (subscriptions.runner).
        self._subscription_hooks: list = []

    @property
    def healthy(self) -> bool:
        return self._connected.is_set()

    async def start(self, wait: float = 5.0) -> None:
        """Start listening (once) and wait up to ``wait`` seconds until LISTEN
        is in effect."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="durable-streams-listener")
        if wait > 0 and not self._connected.is_set():
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

    def add_subscription_hook(self, hook) -> None:
        """Route ``s<id>`` notifications (sent by the subscription append
        trigger) to ``hook.notified(id)``, and reconnects to ``hook.reconnected()``."""
        if hook not in self._subscription_hooks:
            self._subscription_hooks.append(hook)

    def _notify_subscriptions(self, payload: str) -> None:
        try:
            subscription_id = int(payload[1:])
        except ValueError:
            logger.warning("ignoring notification %r", payload)
            return
        for hook in self._subscription_hooks:
            hook.notified(subscription_id)

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

    def notified_since(self, stream_id: int, mark: int) -> bool:
        """Whether ``stream_id`` may have changed since ``notifications`` was ``mark``.

        Lets a reader take ``mark`` before its first read and subscribe after
        it: if this says True, the read may have missed a commit. Errs towards
        True (an extra read), never towards False.
        """
        return not self.healthy or self._forgotten > mark or self._recent.get(stream_id, -1) > mark

    def _record(self, stream_id: int) -> None:
        self.notifications += 1
        recent = self._recent
        recent[stream_id] = self.notifications
        recent.move_to_end(stream_id)
        if len(recent) > _RECENT:
            _, evicted = recent.popitem(last=False)
            self._forgotten = max(self._forgotten, evicted)

    def _reset(self) -> None:
        # Connection lost or regained: anything may have been missed.
        self.notifications += 1
        self._forgotten = self.notifications
        self._recent.clear()
        self.wake_all()
        for hook in self._subscription_hooks:
            hook.reconnected()

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
                    self._reset()
                    async for note in conn.notifies():
                        if note.payload.startswith("s"):
                            # The subscription append trigger: "s<subscription id>".
                            self._notify_subscriptions(note.payload)
                            continue
                        try:
                            stream_id = int(note.payload)
                        except ValueError:
                            logger.warning("ignoring notification %r", note.payload)
                            continue
                        self._record(stream_id)
                        self.wake(stream_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("stream notification listener lost: %s", exc)
            self._connected.clear()
            self._reset()
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
        _watch_shutdown_signals()
    return listener


# --- shutdown: end live responses at once ---------------------------------------------------

_stopping = False
_signals_hooked = False


def stopping() -> bool:
    """Whether the process is shutting down (live reads end at once)."""
    return _stopping


def shut_down() -> None:
    """End every live read of this process now: waiting long-polls answer as at
    their timeout, SSE responses end, and their clients reconnect elsewhere.

    Called on SIGTERM/SIGINT; ASGI servers (uvicorn) otherwise wait for open
    responses to finish before they exit.
    """
    global _stopping
    _stopping = True
    for loop, listener in list(_listeners.items()):
        if not loop.is_closed():
            loop.call_soon_threadsafe(listener.wake_all)


def _watch_shutdown_signals() -> None:
    """Chain :func:`shut_down` before the server's own SIGTERM/SIGINT handlers
    (once, from the main thread, when the first live read starts)."""
    global _signals_hooked
    if _signals_hooked or threading.current_thread() is not threading.main_thread():
        return
    _signals_hooked = True
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # SIG_DFL / SIG_IGN: the server did not ask to handle it

        def handler(number, frame, previous=previous):
            shut_down()
            previous(number, frame)

        signal.signal(signum, handler)


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

    async def wait(self, seconds: float | None) -> bool:
        """Wait up to ``seconds`` (None: no limit) for a change; True if woken.

        Returns early (False) while the listener is down, so the caller
        re-reads on the fallback interval.
        """
        if seconds is not None and seconds <= 0:
            return False
        if not self._listener.healthy:
            fallback = ds_settings.FALLBACK_POLL_INTERVAL
            seconds = fallback if seconds is None else min(seconds, fallback)
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


def _shorter(a: float | None, b: float | None) -> float | None:
    """The shorter of two waits, None being no limit."""
    if a is None or b is None:
        return b if a is None else a
    return min(a, b)


class Idle:
    """What :class:`Follow` yields when nothing changed for its ``idle`` seconds."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "live.IDLE"


IDLE = Idle()


class ReadFailed(StreamError):
    """A read of a followed stream failed for a reason of the server's own
    (the database): the follow ends with this error instead of hanging."""

    status = 503


class Follow:
    """Follow one stream from ``position``: read, wait for a change, read again.

    The one loop behind long-poll, SSE, ``state.afollow`` and ``streams tail``::

        async with Follow(path, position, until=deadline, idle=15.0) as reads:
            async for event in reads:
                if event is IDLE:
                    ...  # nothing changed for ``idle`` seconds
                else:
                    ...  # a storage.ReadResult

    Yields the first read (even when empty), each further chunk while behind,
    then each read that brings data or closes the stream once caught up
    (a wake-up that finds nothing new yields nothing). ``position`` None starts at the
    tail. The iteration ends after the read that reaches the end of a closed
    stream, or once ``until`` (a ``time.monotonic()`` instant) has passed.

    ``await reads.start()`` does the first read ahead of the iteration, so a
    caller can answer its errors (404, 410, an offset past the tail) before it
    commits to a response; the iteration then begins with that read.

    Reads raise :class:`~durable_streams.exceptions.StreamError`: the
    protocol's own errors as they are (a stream deleted or expired while
    followed: 404/410), and :class:`ReadFailed` for anything else, logged
    here. Either way the iteration ends; it never hangs.

    Only the first read reads the stream row before the subscription: the
    listener tells whether that stream was notified since just before the
    read (:meth:`Listener.notified_since`), and if so it is read again at once.
    """

    def __init__(
        self,
        path: str,
        position: int | None,
        *,
        until: float | None = None,
        idle: float | None = None,
    ) -> None:
        self.path = path
        self.until = until
        self.idle = idle
        #: The latest read (None before the first).
        self.last: ReadResult | None = None
        self._position = position
        self._listener: Listener | None = None
        self._mark = 0
        self._first: ReadResult | None = None
        self._events: AsyncIterator[ReadResult | Idle] | None = None

    async def start(self) -> ReadResult:
        """The first read (once; later calls return it again)."""
        if self._first is None:
            listener = self._listener = get_listener()
            # Not waiting for the connection: a read that can answer at once
            # should not wait, and notified_since covers the gap.
            await listener.start(wait=0)
            self._mark = listener.notifications
            # Any read started after this request arrived will do.
            self._first = await self._read(time.monotonic())
        return self._first

    async def _read(self, shared_since: float) -> ReadResult:
        try:
            result = await storage.aread(self.path, self._position, shared_since=shared_since)
        except StreamError:
            raise
        except Exception as exc:
            logger.warning("live read of %r failed: %r", self.path, exc)
            raise ReadFailed("stream read failed") from exc
        self._position = result.next_position
        self.last = result
        return result

    def __aiter__(self) -> AsyncIterator[ReadResult | Idle]:
        if self._events is None:
            self._events = self._run()
        return self._events

    async def __aenter__(self) -> Follow:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the follow and its subscription (``async with`` does this)."""
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]

    def _remaining(self) -> float | None:
        return None if self.until is None else self.until - time.monotonic()

    async def _run(self) -> AsyncIterator[ReadResult | Idle]:
        result = first = await self.start()
        listener = self._listener
        assert listener is not None
        stream_id = result.stream.id
        event = listener.subscribe(stream_id)
        changes = Watch(listener, stream_id, event)
        connected = False
        try:
            # Committed between the first read and subscribing? Read again.
            stale = listener.notified_since(stream_id, self._mark)
            quiet_since = time.monotonic()
            while True:
                if result is first or result.units or result.closed:
                    yield result
                    quiet_since = time.monotonic()
                if result.closed or _stopping:
                    return
                if result.up_to_date and not stale:
                    if not connected:
                        await listener.start()
                        connected = True
                    while True:
                        remaining = self._remaining()
                        if (remaining is not None and remaining <= 0) or _stopping:
                            return
                        idle_left = None
                        if self.idle is not None:
                            idle_left = self.idle - (time.monotonic() - quiet_since)
                            if idle_left <= 0:
                                yield IDLE
                                quiet_since = time.monotonic()
                                continue
                        if await changes.wait(_shorter(remaining, idle_left)):
                            if _stopping:
                                return
                            break
                        if not changes.healthy:
                            break  # listener down: re-read on the fallback interval
                stale = False
                result = await self._read(changes.woken_at)
        finally:
            listener.unsubscribe(stream_id, event)
