"""Piping an upstream body into its stream in the background (spec section 8).

Each proxy stream has a companion JSON stream (``<path>.meta``) with what a
reader needs besides the bytes: the upstream's ``Content-Type`` (its first
message) and, once piping ends, how it ended (``completed``, ``aborted`` or
``failed``; the last message, after which it is closed). The data stream is
closed in every case, so readers never wait forever; a failure in an SSE body
also ends with an in-band ``event: error``, which SSE consumers see.

Batching, exactly-once appends and closing are the token writer's
(:class:`durable_streams.ai.writer.TokenWriter`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict

import httpcore

from .. import api, content, live
from ..ai.encoding import Text
from ..ai.writer import TokenWriter
from ..conf import ds_settings
from ..exceptions import NotFound, StreamError
from ..executor import run

logger = logging.getLogger("durable_streams.proxy")

# Pipes running in this process, by stream id: what abort and delete cancel.
_running: dict[str, asyncio.Task] = {}
# Upstream content types and final outcomes never change: cache them.
_known: OrderedDict[str, dict] = OrderedDict()
_KNOWN_MAX = 10_000


def data_path(stream_id: str) -> str:
    return f"{ds_settings.PROXY_STREAM_PREFIX}{stream_id}"


def meta_path(stream_id: str) -> str:
    return data_path(stream_id) + ".meta"


def _is_sse(content_type: str) -> bool:
    return content.media_type(content_type) == "text/event-stream"


def _sse_error(error: BaseException) -> bytes:
    code = "UPSTREAM_TIMEOUT" if isinstance(error, httpcore.TimeoutException) else "UPSTREAM_ERROR"
    data = json.dumps({"error": {"code": code, "message": "upstream body ended early"}})
    # Blank lines first: they end an event the upstream left half written.
    return f"\n\nevent: error\ndata: {data}\n\n".encode()


def stored_type(upstream_type: str) -> str:
    """The stream's own type: the upstream's if it is text (so SSE reads carry
    it as text), else application/octet-stream (never JSON mode, whose appends
    must be whole JSON values)."""
    if content.media_type(upstream_type).startswith("text/") and content.valid_content_type(
        upstream_type
    ):
        return upstream_type
    return content.DEFAULT_CONTENT_TYPE


def writer_for(stream_id: str, upstream_type: str) -> TokenWriter:
    """The writer of a proxy stream: the upstream's bytes as they come (the
    upstream type is in the meta stream), an SSE error event on failure."""
    encoding = Text(
        stored_type(upstream_type),
        error_marker=_sse_error if _is_sse(upstream_type) else None,
    )
    return TokenWriter(
        data_path(stream_id),
        encoding=encoding,
        linger=float(ds_settings.PROXY_LINGER),
        # Units are upstream reads (usually one SSE event each): bytes bound the batch too.
        batch_size=max(1, int(ds_settings.PROXY_BATCH_BYTES) // 64),
        ttl_seconds=int(ds_settings.PROXY_STREAM_TTL),
        producer_id=f"proxy-{stream_id}",
    )


async def create(stream_id: str, upstream_type: str) -> TokenWriter:
    """Create the data and meta streams; raises on a storage failure."""
    ttl = int(ds_settings.PROXY_STREAM_TTL)
    await api.acreate_stream(
        meta_path(stream_id),
        content_type="application/json",
        ttl_seconds=ttl,
        data=[{"upstreamContentType": upstream_type}],
    )
    writer = writer_for(stream_id, upstream_type)
    await writer.open()
    _remember(stream_id, {"upstreamContentType": upstream_type})
    return writer


def start(stream_id: str, writer: TokenWriter, response: httpcore.Response) -> None:
    """Pipe ``response``'s body into the stream in the background."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(
        _pipe(stream_id, writer, response), name=f"durable-streams-proxy-{stream_id}"
    )
    _running[stream_id] = task
    watcher = loop.create_task(_watch_abort(stream_id, task))

    def done(_: asyncio.Task) -> None:
        _running.pop(stream_id, None)
        watcher.cancel()

    task.add_done_callback(done)


async def _watch_abort(stream_id: str, task: asyncio.Task) -> None:
    """Cancel ``task`` when an abort request lands in the meta stream: an
    abort answered by another server process (:func:`request_abort`)."""
    try:
        async with live.Follow(meta_path(stream_id), None) as reads:
            async for result in reads:
                if result.units and any(
                    isinstance(m, dict) and m.get("abort") is True for m in json.loads(result.body)
                ):
                    task.cancel()
                    return
    except StreamError:
        return  # the meta stream was deleted: the pipe ends on its own


async def _pipe(stream_id: str, writer: TokenWriter, response: httpcore.Response) -> None:
    outcome, error = "completed", None
    try:
        async for chunk in response.aiter_stream():
            await writer.write(chunk)
    except asyncio.CancelledError:
        outcome = "aborted"  # PATCH ?action=abort, DELETE, or server shutdown
    except Exception as exc:
        outcome, error = "failed", exc  # network error, idle timeout, storage error
    finally:
        await asyncio.shield(response.aclose())
    try:
        if error is not None:
            logger.warning("proxy stream %s: upstream body failed: %s", stream_id, error)
        # The outcome before the data stream closes: a reader that sees the
        # close (Stream-Closed) also gets Proxy-Outcome.
        await _record(stream_id, outcome)
        if error is None:
            await writer.finish()
        else:
            await writer.fail(error)
    except NotFound:
        pass  # deleted while piping
    except Exception:
        logger.exception("proxy stream %s: could not finish", stream_id)


async def _record(stream_id: str, outcome: str) -> None:
    await api.aappend(meta_path(stream_id), [{"outcome": outcome}], close=True)
    info = _known.get(stream_id)
    if info is not None:
        info["outcome"] = outcome


def abort(stream_id: str) -> None:
    """Stop this process's pipe of ``stream_id``, if any (idempotent)."""
    task = _running.get(stream_id)
    if task is not None:
        task.cancel()


async def request_abort(stream_id: str, within: float = 10.0) -> None:
    """Stop the pipe of ``stream_id`` wherever it runs, and wait (up to
    ``within`` seconds) until what was received is stored.

    In this process the task is cancelled directly; a pipe in another process
    follows its meta stream (:func:`_watch_abort`) and stops on the abort
    request appended there. Idempotent: a finished pipe's meta stream is
    closed, and the request is then a no-op.
    """
    if stream_id in _running:
        abort(stream_id)
        await wait(stream_id)
        return
    try:
        await api.aappend(meta_path(stream_id), [{"abort": True}])
    except StreamError:
        return  # closed (piping already ended) or gone
    try:
        async with asyncio.timeout(within):
            async with live.Follow(meta_path(stream_id), None) as reads:
                async for result in reads:
                    if result.closed:
                        return  # the pipe recorded its outcome and finished
    except (TimeoutError, StreamError):
        return


async def wait(stream_id: str) -> None:
    """Wait until this process's pipe of ``stream_id`` (if any) has finished."""
    task = _running.get(stream_id)
    if task is not None:
        await asyncio.gather(asyncio.shield(task), return_exceptions=True)


def _remember(stream_id: str, info: dict) -> None:
    _known[stream_id] = info
    _known.move_to_end(stream_id)
    while len(_known) > _KNOWN_MAX:
        _known.popitem(last=False)


async def info(stream_id: str) -> dict:
    """``{"upstreamContentType": ..., "outcome": ...}`` as known so far ({} if
    the stream has no meta stream)."""
    known = _known.get(stream_id)
    if known is not None and "outcome" in known:
        return known
    try:
        messages, _ = await run(api.read_json, meta_path(stream_id))
    except StreamError:
        return {}
    merged: dict = {}
    for message in messages:
        if isinstance(message, dict):
            merged.update(message)
    _remember(stream_id, merged)
    return merged


def forget(stream_id: str) -> None:
    _known.pop(stream_id, None)
