"""Group commit: coalesce concurrent appends into shared transactions.

Requests from the async views queue here. Up to ``GROUP_COMMIT_INFLIGHT``
batches run at once; each takes everything queued when it starts (at most
``GROUP_COMMIT_MAX_BATCH`` requests) and applies it with
:func:`~durable_streams.storage.appends.append_batch` in one transaction. Under light
load a batch holds one request and adds no latency; under heavy load one
lock, one commit and one notification serve many appends. Every request is
still validated on its own, in arrival order, and gets its own answer.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

from ..conf import ds_settings
from .appends import aappend_batch
from .types import AppendRequest, AppendResult, BatchOutcome

ApplyBatch = Callable[[list[AppendRequest]], Awaitable[list[BatchOutcome]]]


class GroupCommitter:
    """The append queue of one event loop."""

    def __init__(self, apply_batch: ApplyBatch = aappend_batch) -> None:
        # The transaction one batch runs in (a parameter so tests can watch it).
        self._apply_batch = apply_batch
        self._queue: list[tuple[AppendRequest, asyncio.Future]] = []
        self._inflight = 0

    async def append(self, request: AppendRequest) -> AppendResult:
        """Queue ``request``; return its result or raise its protocol error."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._inflight < ds_settings.GROUP_COMMIT_INFLIGHT:
            self._inflight += 1
            asyncio.get_running_loop().create_task(self._drain())
        # Not shielded: a waiter that goes away cancels only its future; the
        # batch skips it and still applies the request it already queued.
        outcome = await future
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        limit = ds_settings.GROUP_COMMIT_MAX_BATCH
        try:
            while self._queue:
                batch, self._queue = self._queue[:limit], self._queue[limit:]
                try:
                    outcomes = await self._apply_batch([request for request, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            self._inflight -= 1


_committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommitter] = (
    weakref.WeakKeyDictionary()
)


async def append(request: AppendRequest) -> AppendResult:
    """Append through the running loop's group committer."""
    loop = asyncio.get_running_loop()
    committer = _committers.get(loop)
    if committer is None:
        committer = _committers[loop] = GroupCommitter()
    return await committer.append(request)
