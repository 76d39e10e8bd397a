"""The subscription engine loop of one event loop (a server process or a
``streams deliver`` worker).

It sleeps until the process's notification listener reports a subscription
(the append trigger notifies ``s<id>`` when a member stream of an idle
subscription grows), a local action kicks it, or the earliest lease expiry
or due delivery comes. Then it evaluates the notified subscriptions, expires
leases and sends due webhooks; the row locks in :mod:`.engine` and
:mod:`.delivery` make every process agree, so each wake is issued and sent
once however many loops run. After a listener outage it re-checks every idle
subscription with pending work once: nothing polls subscriptions one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from django.utils import timezone

from ..conf import ds_settings
from ..exceptions import ServiceUnavailable
from ..executor import run
from . import delivery, engine

logger = logging.getLogger("durable_streams.subscriptions")

# Longest sleep without a notification: bounds how late a lost one is noticed.
MAX_IDLE = 5.0


class Runner:
    """The engine loop of one event loop."""

    def __init__(self) -> None:
        self._dirty: set[int] = set()
        self._kick = asyncio.Event()
        self._recover = True
        self._task: asyncio.Task | None = None
        self._sends: set[asyncio.Task] = set()
        self.wakes = 0
        self.sent = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="durable-streams-subscriptions"
            )

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._sends] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    def notified(self, subscription_id: int) -> None:
        """A subscription's member stream grew (from the listener)."""
        self._dirty.add(subscription_id)
        self._kick.set()

    def reconnected(self) -> None:
        """The listener was down: notifications may be lost."""
        self._recover = True
        self._kick.set()

    def kick(self) -> None:
        self._kick.set()

    async def _run(self) -> None:
        from ..live import get_listener

        listener = get_listener()
        listener.add_subscription_hook(self)
        await listener.start()
        while True:
            delay = MAX_IDLE
            try:
                delay = await self._step()
            except asyncio.CancelledError:
                raise
            except ServiceUnavailable:
                # The database is down (a restart, an outage): expected, so one
                # line, and a full rescan once it answers (the step's dirty set
                # may have been taken).
                logger.warning("subscription engine: database unavailable; retrying")
                self._recover = True
                delay = 1.0
            except Exception:
                logger.exception("subscription engine step failed")
                self._recover = True
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._kick.wait()
            self._kick.clear()

    async def _step(self) -> float:
        if self._recover:
            self._recover = False
            self._dirty.update(await run(engine.idle_with_pending_work))
        dirty, self._dirty = self._dirty, set()
        for pk in sorted(dirty):
            if await run(engine.evaluate, pk):
                self.wakes += 1
        await run(engine.expire_leases)
        for item in await run(delivery.take_due):
            task = asyncio.get_running_loop().create_task(self._send(item))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        deadline = await run(engine.next_deadline)
        if deadline is None:
            return MAX_IDLE
        return min(MAX_IDLE, max(0.02, (deadline - timezone.now()).total_seconds() + 0.01))

    async def _send(self, item: delivery.Delivery) -> None:
        from . import webhooks

        try:
            outcome = await webhooks.deliver(item.url, item.payload)
            await run(delivery.record, item, ok=outcome.ok, done=outcome.done, error=outcome.error)
            self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("webhook delivery of %s failed", item.name)
        self._kick.set()


_runners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runner] = weakref.WeakKeyDictionary()


def get_runner() -> Runner:
    loop = asyncio.get_running_loop()
    runner = _runners.get(loop)
    if runner is None:
        runner = _runners[loop] = Runner()
    return runner


def ensure_running() -> None:
    """Start this event loop's engine loop unless the deployment keeps
    delivery in ``streams deliver`` workers (``SUBSCRIPTIONS_IN_SERVER``)."""
    if ds_settings.SUBSCRIPTIONS_IN_SERVER:
        get_runner().start()


def kick() -> None:
    """Run this event loop's engine step soon (after a local state change)."""
    runner = _runners.get(asyncio.get_running_loop())
    if runner is not None:
        runner.kick()


async def run_forever() -> None:
    """The ``streams deliver`` worker: the engine loop, whatever the setting."""
    runner = get_runner()
    runner.start()
    assert runner._task is not None
    await runner._task
