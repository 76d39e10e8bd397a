"""Generations that outlive the request that started them.

A transport's chat endpoint answers as soon as the stream exists, while the
model keeps writing; the client may be gone by then. Tasks are kept here
(the event loop holds tasks only weakly) until they finish. A generation
still running when the server process stops is cut short: its stream stays
open without a closing marker (a supervisor that restarts generations, e.g.
a Celery task with :func:`~durable_streams.ai.write_stream`, avoids that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

logger = logging.getLogger("durable_streams.ai")
T = TypeVar("T")

_tasks: set[asyncio.Task] = set()


def _done(task: asyncio.Task) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # The writer logged the failure and marked the stream; keep asyncio quiet.
        logger.debug("background generation ended with %r", task.exception())


def spawn(coro: Awaitable[T]) -> asyncio.Task:
    """Run ``coro`` to completion in the background, whatever the request does."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_done)
    return task


async def run_detached(coro: Awaitable[T]) -> T:
    """Await ``coro`` in a task a cancelled caller cannot stop.

    Django cancels an async view when its client disconnects; a generation
    awaited with this keeps going (and keeps writing) all the same.
    """
    return await asyncio.shield(spawn(coro))


async def call_hook(hook: Callable[..., Any] | None, *args: Any) -> None:
    """Call a sync or async callback, logging (not raising) its errors."""
    if hook is None:
        return
    try:
        outcome = hook(*args)
        if asyncio.iscoroutine(outcome):
            await outcome
    except Exception:
        logger.exception("AI streaming callback %r failed", hook)


def pending() -> int:
    """Background generations still running in this process."""
    return len(_tasks)
