"""The token writer: a generation's chunks into a stream, coalesced, exactly once.

A model streams a reply as many small chunks; one append transaction per
chunk would cost a commit (and a wake-up of every reader) per token. The
writer buffers chunks for at most ``linger`` seconds or ``batch_size`` units
(:mod:`.coalesce`) and appends each batch as one request of an idempotent
producer (``Producer-Id``/``-Epoch``/``-Seq``, spec 5.2.1): a batch retried
after a lost acknowledgement is stored once. On success the last batch and the
closure commit together; on failure or cancellation an error marker is written
and the stream closed, so a reader always learns how the generation ended.

Entry points:

- :func:`awrite_stream` for async code (an async view, a Channels consumer);
- :func:`write_stream` for sync code (a Celery task, a management command);
- :class:`TokenWriter` when the caller drives the chunks itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import api
from ..conf import ds_settings
from ..exceptions import StreamError
from ..producers import Producer
from .coalesce import Coalescer
from .encoding import Encoding, resolve_encoding

logger = logging.getLogger("durable_streams.ai")

__all__ = ["TokenWriter", "WriteResult", "awrite_stream", "write_stream"]

_RETRY_BACKOFF = 0.05  # seconds before the first retry; doubles each time


SourceT = AsyncIterable[Any] | Iterable[Any]
EncodingArg = Encoding | Callable[[Any], Iterable[Any] | None] | str


@dataclass(frozen=True)
class WriteResult:
    """How a written generation ended."""

    path: str
    #: The stream's tail after the last append (what a reader reaches at the end).
    next_offset: str
    closed: bool
    #: False when the source failed or was cancelled (the marker was written).
    ok: bool
    chunks: int
    appends: int


class _Appender:
    """One idempotent producer appending batches in order, with retries.

    The sequence number advances only once a batch is acknowledged, so a retry
    sends the same ``(id, epoch, seq)`` and the stream keeps it once. A batch
    whose retries all failed may still have committed: it stays ``unacked``
    and is sent again, with its own sequence number, before anything else.
    """

    def __init__(
        self, path: str, content_type: str, producer_id: str, epoch: int, retries: int
    ) -> None:
        self.path = path
        self.content_type = content_type
        self.producer_id = producer_id
        self.epoch = epoch
        self.retries = retries
        self.seq = 0
        self.appends = 0
        self.next_offset: str | None = None
        self.closed = False
        self.unacked: bytes | None = None

    def _kwargs(self, close: bool) -> dict[str, Any]:
        producer = Producer(self.producer_id, self.epoch, self.seq)
        return {"content_type": self.content_type, "close": close, "producer": producer}

    def _acked(self, result: api.AppendResult) -> api.AppendResult:
        self.seq += 1
        self.appends += 1
        self.unacked = None
        self.next_offset = result.next_offset
        self.closed = result.closed
        return result

    def _retry_or_raise(self, body: bytes | None, close: bool, attempt: int) -> float:
        if attempt == self.retries:
            if not close:
                self.unacked = body
            raise
        logger.warning("append to %s failed; retrying", self.path, exc_info=True)
        return _RETRY_BACKOFF * 2**attempt

    def send(self, body: bytes | None, close: bool) -> api.AppendResult:
        if self.unacked is not None and (body, close) != (self.unacked, False):
            self.send(self.unacked, False)
        for attempt in range(self.retries + 1):
            try:
                return self._acked(api.append(self.path, body, **self._kwargs(close)))
            except StreamError:
                raise  # the protocol's answer: retrying cannot change it
            except Exception:
                time.sleep(self._retry_or_raise(body, close, attempt))
        raise AssertionError("unreachable")

    async def asend(self, body: bytes | None, close: bool) -> api.AppendResult:
        if self.unacked is not None and (body, close) != (self.unacked, False):
            await self.asend(self.unacked, False)
        for attempt in range(self.retries + 1):
            try:
                return self._acked(await api.aappend(self.path, body, **self._kwargs(close)))
            except StreamError:
                raise
            except Exception:
                await asyncio.sleep(self._retry_or_raise(body, close, attempt))
        raise AssertionError("unreachable")


class TokenWriter:
    """Writes one generation into the stream at ``path``.

    Async use (the sync twin is :func:`write_stream`)::

        async with TokenWriter("chat/42/reply") as writer:
            async for token in model_stream:
                await writer.write(token)
        # closed on success; on an exception the marker is written, then closed

    ``encoding``: ``"json"`` (each chunk one JSON message, the default),
    ``"text"`` (str/bytes chunks concatenated), a callable that turns a chunk
    into the JSON messages to append, or an :class:`~.encoding.Encoding`.
    ``linger``/``batch_size`` default to ``DURABLE_STREAMS["AI_WRITER_LINGER"]``
    and ``["AI_WRITER_BATCH_SIZE"]``. ``create`` creates the stream if needed
    (with ``ttl_seconds``). ``close=False`` leaves the stream open at the end
    (a chat session stream that later turns append to). ``producer_id`` and
    ``epoch`` identify the producer (a fresh id by default); a process that
    resumes a generation it had started takes the same id and ``epoch + 1``.
    """

    def __init__(
        self,
        path: str,
        *,
        encoding: EncodingArg = "json",
        linger: float | None = None,
        batch_size: int | None = None,
        create: bool = True,
        ttl_seconds: int | None = None,
        close: bool = True,
        producer_id: str | None = None,
        epoch: int = 0,
        retries: int | None = None,
    ) -> None:
        self.path = path
        self.encoding = resolve_encoding(encoding)
        self.create = create
        self.ttl_seconds = ttl_seconds
        self.close_at_end = close
        self._coalescer = Coalescer(
            ds_settings.AI_WRITER_LINGER if linger is None else float(linger),
            ds_settings.AI_WRITER_BATCH_SIZE if batch_size is None else int(batch_size),
        )
        self._producer_id = producer_id or f"ai-writer-{uuid.uuid4().hex}"
        self._epoch = epoch
        self._retries = ds_settings.AI_WRITER_RETRIES if retries is None else int(retries)
        self._appender: _Appender | None = None
        self._chunks = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task | None = None
        self._inflight: asyncio.Future | None = None
        self._error: BaseException | None = None
        self._result: WriteResult | None = None

    # -- lifecycle ----------------------------------------------------------------

    def _open_with(self, meta: api.StreamMeta) -> None:
        self._appender = _Appender(
            self.path, meta.content_type, self._producer_id, self._epoch, self._retries
        )
        self._appender.next_offset = meta.tail_offset

    def _stream_meta(self) -> api.StreamMeta:
        if self.create:
            return api.create_stream(
                self.path, content_type=self.encoding.content_type, ttl_seconds=self.ttl_seconds
            )
        return api.head(self.path)

    async def open(self) -> TokenWriter:
        """Create (or find) the stream. Called by ``async with`` and
        :func:`awrite_stream`; raises the protocol error if it cannot be used."""
        if self._appender is None:
            from ..executor import run

            self._open_with(await run(self._stream_meta))
        return self

    async def __aenter__(self) -> TokenWriter:
        return await self.open()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            await self.finish()
        else:
            await asyncio.shield(self.fail(exc))

    @property
    def result(self) -> WriteResult | None:
        """The outcome once :meth:`finish` or :meth:`fail` ran."""
        return self._result

    # -- writing --------------------------------------------------------------------

    async def write(self, chunk: Any) -> None:
        """Buffer ``chunk``; append when the batch is full or has lingered."""
        if self._appender is None:
            await self.open()
        self._raise_deferred()
        units = self.encoding.encode(chunk)
        self._chunks += 1
        if not units:
            return
        loop = asyncio.get_running_loop()
        self._coalescer.add(units, loop.time())
        if self._coalescer.full:
            await self.flush()  # backpressure: the source waits for the append
        elif self._timer is None and self._flushing is None:
            self._timer = loop.call_later(self._coalescer.linger, self._on_linger)

    def _on_linger(self) -> None:
        self._timer = None
        self._flushing = asyncio.get_running_loop().create_task(self._timed_flush())

    async def _timed_flush(self) -> None:
        try:
            await self.flush()
        except BaseException as exc:  # surfaced by the next write()/finish()
            self._error = exc
        finally:
            self._flushing = None
            # Units that arrived during the append start their own linger.
            if len(self._coalescer) and self._timer is None and self._error is None:
                loop = asyncio.get_running_loop()
                delay = max(0.0, (self._coalescer.due_at() or 0) - loop.time())
                self._timer = loop.call_later(delay, self._on_linger)

    def _raise_deferred(self) -> None:
        if self._error is not None:
            raise self._error

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def flush(self) -> None:
        """Append everything buffered now, in batches of ``batch_size``."""
        assert self._appender is not None
        async with self._lock:
            self._cancel_timer()
            # Only what is buffered now: units that arrive during these appends
            # start their own linger (_timed_flush re-arms the timer), so a
            # steady source gets one append per linger interval, not one per
            # commit.
            left = len(self._coalescer)
            while left > 0:
                units = self._coalescer.take(left)
                left -= len(units)
                body = self.encoding.join(units)
                # Shielded: a cancelled caller must not leave an append half
                # known; _end() waits for it before writing the marker.
                self._inflight = asyncio.ensure_future(self._appender.asend(body, close=False))
                await asyncio.shield(self._inflight)

    async def finish(self) -> WriteResult:
        """Append what is buffered and close the stream (in one transaction)."""
        return await self._end(None)

    async def fail(self, error: BaseException) -> WriteResult:
        """Append what is buffered, then the error marker, and close the stream.

        The marker says only that the generation failed or was cancelled; the
        exception itself goes to the ``durable_streams.ai`` log.
        """
        return await self._end(error)

    async def _end(self, error: BaseException | None) -> WriteResult:
        if self._result is not None:
            return self._result
        if self._appender is None:
            await self.open()
        assert self._appender is not None
        if error is not None:
            _log_failure(self.path, error)
        self._cancel_timer()
        for task in (self._flushing, self._inflight):
            if task is not None and task is not asyncio.current_task():
                await asyncio.gather(task, return_exceptions=True)
        async with self._lock:
            units = self._coalescer.take_all()
            if error is not None:
                units += self.encoding.error_units(error)
            elif self._error is not None:
                raise self._error
            body = self.encoding.join(units) if units else None
            if body is not None or self.close_at_end:
                await self._appender.asend(body, close=self.close_at_end)
        self._result = self._make_result(ok=error is None)
        return self._result

    async def consume(self, source: SourceT) -> WriteResult:
        """Write every chunk of ``source``, then finish; on an exception or a
        cancellation write the marker, close, and re-raise."""
        await self.open()
        try:
            async for chunk in _aiterate(source):
                await self.write(chunk)
        except BaseException as exc:
            await asyncio.shield(self.fail(exc))
            raise
        return await self.finish()

    def _make_result(self, *, ok: bool) -> WriteResult:
        assert self._appender is not None
        return WriteResult(
            path=self.path,
            next_offset=self._appender.next_offset or "",
            closed=self._appender.closed,
            ok=ok,
            chunks=self._chunks,
            appends=self._appender.appends,
        )

    # -- the sync driver (write_stream) ---------------------------------------------------

    def _sync_run(self, source: Iterable[Any]) -> WriteResult:
        self._open_with(self._stream_meta())
        assert self._appender is not None
        appender = self._appender
        coalescer = self._coalescer
        encoding = self.encoding

        def flush_due(force: bool) -> None:
            while len(coalescer) and (force or coalescer.due(time.monotonic())):
                appender.send(encoding.join(coalescer.take()), close=False)

        error: BaseException | None = None
        try:
            for chunk, wait in _pull_with_timeouts(source, coalescer.due_at):
                if wait:
                    flush_due(force=False)
                    continue
                units = encoding.encode(chunk)
                self._chunks += 1
                coalescer.add(units, time.monotonic())
                flush_due(force=False)
        except BaseException as exc:
            error = exc
        if error is not None:
            _log_failure(self.path, error)
        units = coalescer.take_all()
        if error is not None:
            units += encoding.error_units(error)
        body = encoding.join(units) if units else None
        try:
            if body is not None or self.close_at_end:
                appender.send(body, close=self.close_at_end)
        finally:
            self._result = self._make_result(ok=error is None)
        if error is not None:
            raise error
        return self._result


def _log_failure(path: str, error: BaseException) -> None:
    if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)):
        logger.info("generation into %s was cancelled", path)
    else:
        logger.error("generation into %s failed", path, exc_info=error)


_END = object()


def _pull_with_timeouts(source: Iterable[Any], due_at: Callable[[], float | None]):
    """Yield ``(chunk, False)`` per chunk of ``source`` and ``(None, True)``
    whenever a buffered batch falls due while the source is silent.

    The source is iterated on a helper thread so that a slow model cannot hold
    back a due batch; a bounded queue keeps it at most a few chunks ahead.
    """
    pipe: queue.Queue = queue.Queue(maxsize=256)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in source:
                while not stop.is_set():
                    try:
                        pipe.put((chunk, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            pipe.put((_END, None))
        except BaseException as exc:
            pipe.put((_END, exc))

    thread = threading.Thread(target=pump, name="durable-streams-ai-source", daemon=True)
    thread.start()
    try:
        while True:
            deadline = due_at()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                chunk, exc = pipe.get(timeout=timeout)
            except queue.Empty:
                yield None, True
                continue
            if chunk is _END:
                if exc is not None:
                    raise exc
                return
            yield chunk, False
    finally:
        stop.set()


async def _aiterate(source: SourceT):
    """Async iteration of an async or a sync iterable (the latter on a thread)."""
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            yield chunk
        return
    iterator = iter(source)
    while True:
        chunk = await asyncio.to_thread(next, iterator, _END)
        if chunk is _END:
            return
        yield chunk


async def awrite_stream(path: str, source: SourceT, **options: Any) -> WriteResult:
    """Write every chunk of ``source`` into the stream at ``path``, then close it.

    ``source`` is an async iterable (an OpenAI or Anthropic SDK stream, an
    async generator) or a sync one (iterated on a thread). Takes the options of
    :class:`TokenWriter`. If ``source`` raises, or this coroutine is cancelled,
    the buffered chunks and an error marker are written and the stream closed
    before the exception propagates.
    """
    return await TokenWriter(path, **options).consume(source)


def write_stream(path: str, source: Iterable[Any], **options: Any) -> WriteResult:
    """The sync twin of :func:`awrite_stream`, for a Celery task or a command.

    Appends run on the calling thread's database connection, each in its own
    transaction: do not call it inside ``transaction.atomic()`` (readers would
    see nothing until the end). The source is iterated on a helper thread, so
    buffered chunks are appended on time even while the model is silent.
    """
    return TokenWriter(path, **options)._sync_run(source)
