"""The agent runner: woken by a pull-wake subscription, it lets agents reply.

One subscription, ``session-agents``, covers every session stream
(``sessions/*``). When one grows, the server appends a wake event to
``agents/wake``. Runners (``manage.py run_agents``, any number of them) follow
that stream and race to claim the wake; the winner reads each pending
session's new events from its acked offset, hands them to
:func:`.runner.respond` (the agents reply, streamed by the token writer), and
acks. The claim is finished (``done``) only after the replies are written,
with heartbeats meanwhile: a runner that dies mid-way loses its lease and
another one takes the wake again.

The runner also sweeps presence (:func:`.presence.sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket

from asgiref.sync import sync_to_async

from . import presence
from .runner import respond
from .schema import STREAM_PREFIX

logger = logging.getLogger("example_project.sessions")

SUBSCRIPTION = "session-agents"
WAKE_STREAM = "agents/wake"
LEASE_TTL_MS = 30_000
# A claim is tried this often even without a wake event, so that a wake issued
# while no runner followed the wake stream is not left waiting for a lease.
CLAIM_POLL_SECONDS = float(os.environ.get("SESSIONS_CLAIM_POLL_SECONDS", "15"))


def ensure_subscription() -> None:
    """Create the pull-wake subscription over every session stream (idempotent)."""
    from durable_streams import api
    from durable_streams.subscriptions import config, engine

    api.create_stream(WAKE_STREAM, content_type="application/json")  # idempotent
    body = {
        "type": "pull-wake",
        "pattern": f"{STREAM_PREFIX}*",
        "wake_stream": WAKE_STREAM,
        "lease_ttl_ms": LEASE_TTL_MS,
        "description": "Durable Sessions agents (example_project.sessions)",
    }
    engine.create_or_confirm(SUBSCRIPTION, config.parse_create(json.dumps(body).encode()), "")


class AgentRunner:
    """Claims the agents' wakes and replies; sweeps presence."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"agents-{socket.gethostname()}-{os.getpid()}"
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        from durable_streams.subscriptions.worker import PullWorker

        await sync_to_async(ensure_subscription)()
        self.worker = PullWorker(SUBSCRIPTION, name=self.name)
        logger.info("agent runner %s: following %s", self.name, WAKE_STREAM)
        tasks = [
            asyncio.create_task(self._follow_wakes()),
            asyncio.create_task(self._poll_claims(stop)),
            asyncio.create_task(self._sweep_presence(stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow_wakes(self) -> None:
        async for _wake in self.worker.wakes(WAKE_STREAM):
            await self.claim_and_handle()

    async def _poll_claims(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.claim_and_handle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CLAIM_POLL_SECONDS)

    async def _sweep_presence(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await sync_to_async(presence.sweep)()
            except Exception:
                logger.exception("presence sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), presence.SWEEP_SECONDS)

    async def claim_and_handle(self) -> None:
        """Claim the current wake (if no other runner has it) and work it off."""
        # One claim at a time per runner; a second wake waits for the first.
        lock = self.__dict__.setdefault("_lock", asyncio.Lock())
        async with lock:
            while True:
                try:
                    claim = await self.worker.aclaim()
                except Exception:
                    logger.exception("claim failed")
                    return
                if claim is None:
                    return
                more = await self._handle(claim)
                if not more:
                    return

    async def _handle(self, claim) -> bool:
        beating = asyncio.create_task(self._heartbeat(claim))
        try:
            for stream in claim.pending():
                new_events, next_offset = await claim.aread_json(stream)
                self.handled += await respond(stream.path, new_events)
                await claim.aack({stream.path: next_offset})
        except BaseException:
            beating.cancel()
            with contextlib.suppress(Exception):
                await claim.arelease()
            raise
        beating.cancel()
        return await claim.adone({})

    async def _heartbeat(self, claim) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_MS / 3000)
            with contextlib.suppress(Exception):
                await claim.aheartbeat()
