"""Waking live readers (long-poll and SSE) when a stream changes.

Every append issues ``pg_notify(channel, stream_id)`` inside its transaction,
so Postgres delivers it only on commit, to every process. Each process (each
event loop) keeps one LISTEN connection and an in-memory map from stream id to
the readers following it (a :class:`Feed`). A notification is a hint, never
data: it makes the feed read the stream once for all the readers waiting at
the same offset and hand each the same result, so an append costs one query
and one wake-up per reader however many follow it. A feed also remembers its
latest read up to the tail, so a long-poll reader that comes back for the next
message, or for the one it was just sent, while nothing new was notified, is
answered without a query (see :meth:`Feed.known_at`). While the listener is
disconnected, readers fall back to re-reading every ``FALLBACK_POLL_INTERVAL`` seconds, and
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
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import NoReturn

import psycopg
from psycopg import sql

from . import storage
from .conf import ds_settings
from .exceptions import StreamError
from .storage import ReadResult, connection_params
from .storage.drivers import reconnect_delays

logger = logging.getLogger("durable_streams.live")

# How many streams' latest notification the listener remembers for readers
# that subscribe after their first read (see Listener.notified_since).
_RECENT = 4096


class Listener:
    """The per-process LISTEN connection and its dispatcher."""

    def __init__(self) -> None:
        self._feeds: dict[int, Feed] = {}
        # The same feeds by stream path, for readers that know only the path.
        self._by_path: dict[str, Feed] = {}
        self._connected = asyncio.Event()
        self._task: asyncio.Task | None = None
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

    def subscribe(self, stream_id: int, path: str) -> Feed:
        """The feed of ``stream_id`` (at ``path``), counting one more follower
        (see :meth:`unsubscribe`)."""
        feed = self._feeds.get(stream_id)
        if feed is None:
            feed = self._feeds[stream_id] = self._by_path[path] = Feed(stream_id, path)
        feed.followers += 1
        return feed

    def feed(self, stream_id: int) -> Feed | None:
        """The feed of ``stream_id`` while anyone follows it."""
        return self._feeds.get(stream_id)

    def feed_at(self, path: str) -> Feed | None:
        """The feed of the stream at ``path`` while anyone follows it."""
        return self._by_path.get(path)

    def unsubscribe(self, stream_id: int, feed: Feed) -> None:
        feed.followers -= 1
        if feed.followers <= 0 and self._feeds.get(stream_id) is feed:
            del self._feeds[stream_id]
            if self._by_path.get(feed.path) is feed:
                del self._by_path[feed.path]

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
        return sum(feed.followers for feed in self._feeds.values())

    def wake(self, stream_id: int) -> None:
        feed = self._feeds.get(stream_id)
        if feed is not None:
            feed.wake()

    def wake_all(self) -> None:
        for stream_id in list(self._feeds):
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

    def _dispatch(self, payload: str) -> None:
        if payload.startswith("s"):
            # The subscription append trigger: "s<subscription id>".
            self._notify_subscriptions(payload)
            return
        try:
            stream_id = int(payload)
        except ValueError:
            logger.warning("ignoring notification %r", payload)
            return
        self._record(stream_id)
        self.wake(stream_id)

    async def _run(self) -> None:
        # The pool's pacing: a database that comes back is noticed within 0.5 s.
        delays = reconnect_delays()
        failing = False
        channel = ds_settings.NOTIFY_CHANNEL
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(**connection_params(), autocommit=True)
                async with conn:
                    # Notifications psycopg reads itself (with LISTEN's answer).
                    conn.add_notify_handler(lambda note: self._dispatch(note.payload))
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._connected.set()
                    delays, failing = reconnect_delays(), False
                    # Anything committed while we were not listening: re-read.
                    self._reset()
                    await self._receive(loop, conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage; the further attempts (two a second) at debug level.
                (logger.debug if failing else logger.warning)(
                    "stream notification listener lost: %s", exc
                )
                failing = True
            if self._connected.is_set():
                # Lost (once, not on every failed attempt): waiting readers re-read,
                # then poll every FALLBACK_POLL_INTERVAL until it is back.
                self._connected.clear()
                self._reset()
            await asyncio.sleep(next(delays))

    async def _receive(self, loop: asyncio.AbstractEventLoop, conn) -> None:
        """Dispatch the notifications ``conn`` receives until it fails (raises).

        The connection does nothing else, so its socket is watched for as long
        as it lives, and each batch of notifications is read from libpq in a
        callback of the loop: psycopg's ``notifies()`` generator costs a wait
        (a reader added and removed, a future and a timer) and two ``Notify``
        objects per notification, about 90 calls per append.
        """
        pgconn, encoding = conn.pgconn, conn.info.encoding
        lost: asyncio.Future[None] = loop.create_future()  # only ever fails

        def readable() -> None:
            try:
                pgconn.consume_input()  # raises once the connection is lost
                while (note := pgconn.notifies()) is not None:
                    self._dispatch(note.extra.decode(encoding))
            except Exception as exc:
                loop.remove_reader(fd)
                if not lost.done():
                    lost.set_exception(exc)

        fd = conn.fileno()
        loop.add_reader(fd, readable)
        try:
            readable()  # any libpq read before the reader was added
            await lost
        finally:
            loop.remove_reader(fd)


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


class Feed:
    """The followers of one stream in one event loop, and their shared reads.

    A follower that has caught up waits here at its offset. A wake reads the
    stream once per offset waited at (usually one: every caught-up follower
    is at the tail) and hands that one result to every follower waiting
    there: one query, one future resolved and one task step per follower,
    whatever their number.

    ``version`` counts wakes: a follower notes it before each read of its own,
    and a change of it since means that read may have missed a commit.
    """

    __slots__ = (
        "_known",
        "_reads",
        "_waiting",
        "followers",
        "path",
        "stream_id",
        "version",
        "woken_at",
    )

    def __init__(self, stream_id: int, path: str) -> None:
        self.stream_id = stream_id
        self.path = path
        self.followers = 0
        self.version = 0
        # Reads started at or after this instant see every commit notified so far
        # (those notified before the feed existed included).
        self.woken_at = time.monotonic()
        self._waiting: dict[tuple[str, int], set[asyncio.Future]] = {}
        self._reads: set[asyncio.Task] = set()
        # The latest read that reached the tail, and the version it reflects.
        self._known: tuple[ReadResult, int] | None = None

    def reached_tail(self, result: ReadResult, version: int) -> None:
        """Note ``result``, a read up to the tail that reflects every wake up
        to ``version`` (see :meth:`known_at`)."""
        stream = result.stream
        if stream.id == self.stream_id and result.up_to_date and stream.deadline() is None:
            # A stream that can expire is left out: its end comes with no
            # notification, and its reads slide its TTL.
            self._known = (result, version)

    def known_at(self, position: int | None) -> ReadResult | None:
        """The read at ``position`` (None: the tail) if it is known without a
        query: the latest read noted by :meth:`reached_tail` if it started
        there, or nothing at its end, while no wake came since.

        A commit acknowledged before the caller asked but not notified yet
        is not in that answer; its notification still wakes this feed, so a
        follower that subscribes without awaiting after this (as
        :class:`Follow` does) reads it then. Readers that do not follow
        must not use it.
        """
        known = self._known
        if known is None or known[1] != self.version:
            return None
        result = known[0]
        if position == result.start:
            return result
        if position is None or position == result.next_position:
            return ReadResult.nothing_at(result.stream, result.next_position)
        return None

    @property
    def waiting(self) -> int:
        """How many followers wait for the next wake now."""
        return sum(len(waiters) for waiters in self._waiting.values())

    def wake(self) -> None:
        """A commit (or a possibly missed one): read once per offset waited at."""
        self.version += 1
        self.woken_at = time.monotonic()
        if not self._waiting:
            return
        batches, self._waiting = self._waiting, {}
        if _stopping:
            # Shutting down: end the follows at once, no read on the way out.
            for waiters in batches.values():
                for waiter in waiters:
                    _expire(waiter)
            return
        loop = asyncio.get_running_loop()
        for (path, position), waiters in batches.items():
            task = loop.create_task(self._deliver(path, position, waiters, self.version))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _deliver(
        self, path: str, position: int, waiters: set[asyncio.Future], version: int
    ) -> None:
        try:
            result = await storage.aread(path, position, shared_since=self.woken_at)
        except Exception as exc:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        self.reached_tail(result, version)
        delivered = (result, version)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(delivered)

    def join(self, path: str, position: int, waiter: asyncio.Future) -> set[asyncio.Future]:
        """Have the next wake resolve ``waiter`` with the read from
        ``position`` it makes and the ``version`` that read reflects (or set
        what that read raised). Returns the batch joined: a waiter that ends
        otherwise (its caller's timer, a cancellation) must :meth:`leave` it;
        a resolved one has left already (a wake takes its batches)."""
        key = (path, position)
        waiters = self._waiting.get(key)
        if waiters is None:
            waiters = self._waiting[key] = set()
        waiters.add(waiter)
        return waiters

    def leave(self, path: str, position: int, waiters: set, waiter: asyncio.Future) -> None:
        """Take ``waiter`` out of the batch :meth:`join` returned."""
        waiters.discard(waiter)
        key = (path, position)
        if not waiters and self._waiting.get(key) is waiters:
            del self._waiting[key]


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
    A first read at the tail of a stream this process already follows (or at
    the start of the feed's latest read), with nothing notified since, takes
    no query at all (:meth:`Feed.known_at`): a long-poll reader's next request. Any other
    first read of a followed stream shares a read in flight that started
    after the feed's latest wake.
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
        # The current wait's future and the timer that may end it (see _ring_at).
        self._waiter: asyncio.Future | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = 0.0

    async def start(self) -> ReadResult:
        """The first read (once; later calls return it again)."""
        if self._first is None:
            listener = self._listener = get_listener()
            # Not waiting for the connection: a read that can answer at once
            # should not wait, and notified_since covers the gap.
            await listener.start(wait=0)
            self._mark = listener.notifications
            feed = listener.feed_at(self.path) if listener.healthy and not _stopping else None
            if feed is not None:
                known = feed.known_at(self._position)
                if known is not None:
                    self._first = self._took(known)
                    return known
                version = feed.version
                # Any read started since the feed's latest wake reflects every
                # commit notified before this request: readers coming back
                # behind the tail share one read.
                since = feed.woken_at
            else:
                # Any read started after this request arrived will do.
                since = time.monotonic()
            self._first = await self._read(since)
            if feed is not None and listener.feed_at(self.path) is feed:
                feed.reached_tail(self._first, version)
        return self._first

    async def _read(self, shared_since: float) -> ReadResult:
        try:
            result = await storage.aread(self.path, self._position, shared_since=shared_since)
        except Exception as exc:
            self._fail(exc)
        return self._took(result)

    def _took(self, result: ReadResult) -> ReadResult:
        self._position = result.next_position
        self.last = result
        return result

    def _fail(self, exc: Exception) -> NoReturn:
        """Raise a read's error as the follow does (see the class docstring)."""
        if isinstance(exc, StreamError):
            raise exc
        logger.warning("live read of %r failed: %r", self.path, exc)
        raise ReadFailed("stream read failed") from exc

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

    async def _run(self) -> AsyncIterator[ReadResult | Idle]:
        result = first = await self.start()
        listener = self._listener
        assert listener is not None
        stream_id = result.stream.id
        loop = asyncio.get_running_loop()
        feed = listener.subscribe(stream_id, self.path)
        # Reads of our own are shared only with reads started after this
        # and after the feed's latest wake (see storage.aread).
        subscribed_at = time.monotonic()
        connected = False
        try:
            # Committed between the first read and subscribing? Read again.
            stale = listener.notified_since(stream_id, self._mark)
            seen = feed.version
            until, idle = self.until, self.idle
            path = self.path
            while True:
                # One clock reading per step, taken after the consumer had the result.
                if result is first or result.units or result.closed:
                    yield result
                    now = quiet_since = time.monotonic()
                else:
                    now = time.monotonic()
                if result.closed or _stopping:
                    return
                delivered = None
                if result.up_to_date and not stale:
                    if not connected:
                        await listener.start()
                        connected = True
                        now = time.monotonic()
                    # A wake since our latest read (feed.version moved): read again.
                    while feed.version == seen:
                        if (until is not None and now >= until) or _stopping:
                            return
                        # This wait ends by the deadline, the idle interval and,
                        # without notifications, the fallback re-read, at the latest.
                        ring_at = until
                        if idle is not None:
                            idle_at = quiet_since + idle
                            if idle_at <= now:
                                yield IDLE
                                now = quiet_since = time.monotonic()
                                continue
                            if ring_at is None or idle_at < ring_at:
                                ring_at = idle_at
                        healthy = listener.healthy
                        if not healthy:
                            fallback_at = now + ds_settings.FALLBACK_POLL_INTERVAL
                            if ring_at is None or fallback_at < ring_at:
                                ring_at = fallback_at
                        waiter = self._waiter = loop.create_future()
                        if ring_at is not None:
                            self._ring_at(loop, ring_at, now)
                        position = self._position
                        assert position is not None
                        waiters = feed.join(path, position, waiter)
                        try:
                            delivered = await waiter
                        except Exception as exc:
                            self._fail(exc)
                        finally:
                            self._waiter = None
                            if delivered is None:
                                feed.leave(path, position, waiters, waiter)
                        if delivered is not None or not healthy:
                            break
                        now = time.monotonic()
                    if _stopping:
                        return
                stale = False
                if delivered is not None:
                    result, seen = delivered
                    self._took(result)
                else:
                    seen = feed.version
                    result = await self._read(max(feed.woken_at, subscribed_at))
                    feed.reached_tail(result, seen)
        finally:
            listener.unsubscribe(stream_id, feed)
            if self._alarm is not None:
                self._alarm.cancel()
                self._alarm = None

    def _ring_at(self, loop: asyncio.AbstractEventLoop, when: float, now: float) -> None:
        """End the current wait (with None) at ``when`` (a ``time.monotonic()``
        instant; ``now`` is the current one) at the latest.

        One timer serves many waits: it is replaced only when it would ring
        too late, and ringing early just makes the loop wait again. So a
        follower woken by every append does not create and cancel a timer
        each time (its idle and deadline timers are seconds away).
        """
        if self._alarm is not None:
            if self._alarm_at <= when:
                return
            self._alarm.cancel()
        self._alarm = loop.call_later(when - now, self._ring)
        self._alarm_at = when

    def _ring(self) -> None:
        self._alarm = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
