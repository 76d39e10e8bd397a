"""A pull-wake worker in Python, in the same project as the streams (spec 7.2).

Follow the wake stream; on each wake event of your subscription, claim it,
read the pending range of each stream, ack what you processed (an ack
without ``done`` is a heartbeat that extends the lease), and finish with
``done`` (or release to let another worker try)::

    from durable_streams.subscriptions.worker import PullWorker

    worker = PullWorker("agents", name="worker-1")
    async for wake in worker.wakes("wake/agents"):        # follows the wake stream
        claim = await worker.aclaim()
        if claim is None:                                  # another worker got it
            continue
        for stream in claim.pending():
            messages, offset = await claim.aread_json(stream)
            ...                                            # do the work
            await claim.aack({stream.path: offset})        # also a heartbeat
        await claim.adone()                                # next_wake if more arrived

Every call goes through the same engine as the HTTP routes (same fencing,
same leases), so HTTP workers and Python workers can share a subscription.
Stale calls raise :class:`~durable_streams.subscriptions.errors.SubscriptionError`
with code ``FENCED``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import api, offsets
from ..executor import run
from . import engine
from .config import Ack, WakeRequest
from .errors import SubscriptionError
from .models import Subscription


@dataclass(frozen=True)
class PendingStream:
    """One linked stream of a claim: read from ``acked_offset`` up to ``tail_offset``."""

    path: str
    link_type: str
    acked_offset: str
    tail_offset: str
    has_pending: bool


@dataclass
class Claim:
    """A held wake: the lease is yours until ``done``, ``release`` or expiry."""

    subscription: str
    wake_id: str
    generation: int
    token: str
    lease_ttl_ms: int
    streams: list[PendingStream] = field(default_factory=list)

    def pending(self) -> list[PendingStream]:
        """The streams with data past their acked offset at claim time."""
        return [s for s in self.streams if s.has_pending]

    def read_json(self, stream: PendingStream) -> tuple[list[Any], str]:
        """The messages of a JSON stream in the pending range, and the offset after them."""
        messages: list[Any] = []
        offset = stream.acked_offset
        end = offsets.decode(stream.tail_offset)
        while offsets.decode(offset) < end:
            result = api.read(stream.path, offset)
            messages.extend(json.loads(result.body))
            offset = result.next_offset
            if result.up_to_date:
                break
        return messages, offset

    def read_bytes(self, stream: PendingStream) -> tuple[bytes, str]:
        """The bytes of the pending range (all of it up to the tail at claim time)."""
        chunks: list[bytes] = []
        offset = stream.acked_offset
        end = offsets.decode(stream.tail_offset)
        while offsets.decode(offset) < end:
            result = api.read(stream.path, offset)
            chunks.append(bytes(result.body))
            offset = result.next_offset
            if result.up_to_date:
                break
        return b"".join(chunks), offset

    def _request(self, acks: Mapping[str, str] | None, done: bool) -> WakeRequest:
        items = tuple(Ack(path, offset) for path, offset in (acks or {}).items())
        return WakeRequest(self.wake_id, self.generation, items, done)

    def ack(self, acks: Mapping[str, str] | None = None, *, done: bool = False) -> bool:
        """Ack ``{path: offset}`` (last processed, inclusive); extends the lease.

        With ``done`` the wake ends; returns whether a new wake was issued
        because work arrived meanwhile.
        """
        result = engine.acknowledge(
            self.subscription,
            self.token,
            self._request(acks, done),
            kind=Subscription.TYPE_PULL_WAKE,
        )
        return bool(result["next_wake"])

    def heartbeat(self) -> None:
        """Extend the lease without acking."""
        self.ack()

    def done(self, acks: Mapping[str, str] | None = None) -> bool:
        """Finish the wake, acking ``acks`` (default: every stream up to its
        tail at claim time)."""
        if acks is None:
            acks = {s.path: s.tail_offset for s in self.streams if s.has_pending}
        return self.ack(acks, done=True)

    def release(self) -> None:
        """Give the wake back unacked; another wake follows if work remains."""
        engine.release(self.subscription, self.token, self._request(None, False))

    async def aread_json(self, stream: PendingStream) -> tuple[list[Any], str]:
        return await run(self.read_json, stream)

    async def aread_bytes(self, stream: PendingStream) -> tuple[bytes, str]:
        return await run(self.read_bytes, stream)

    async def aack(self, acks: Mapping[str, str] | None = None, *, done: bool = False) -> bool:
        return await run(self.ack, acks, done=done)

    async def aheartbeat(self) -> None:
        await run(self.heartbeat)

    async def adone(self, acks: Mapping[str, str] | None = None) -> bool:
        return await run(self.done, acks)

    async def arelease(self) -> None:
        await run(self.release)


class PullWorker:
    """Claims wakes of one pull-wake subscription under a worker name."""

    def __init__(self, subscription: str, *, name: str) -> None:
        self.subscription = subscription
        self.name = name

    def claim(self) -> Claim | None:
        """Claim the current wake; None if another worker holds it or no work is pending."""
        try:
            data = engine.claim(self.subscription, self.name)
        except SubscriptionError as exc:
            if exc.code in ("ALREADY_CLAIMED", "NO_PENDING_WORK"):
                return None
            raise
        return Claim(
            subscription=self.subscription,
            wake_id=data["wake_id"],
            generation=data["generation"],
            token=data["token"],
            lease_ttl_ms=data["lease_ttl_ms"],
            streams=[PendingStream(**s) for s in data["streams"]],
        )

    async def aclaim(self) -> Claim | None:
        return await run(self.claim)

    async def wakes(
        self, wake_stream: str, offset: str = offsets.NOW
    ) -> AsyncIterator[dict[str, Any]]:
        """Follow ``wake_stream`` live (from ``offset``, default its tail) and
        yield this subscription's wake events."""
        from .. import live

        async with live.Follow(wake_stream, offsets.parse(offset)) as reads:
            async for result in reads:
                if result is live.IDLE or not result.body:
                    continue
                for event in json.loads(result.body):
                    if (
                        isinstance(event, dict)
                        and event.get("type") == "wake"
                        and event.get("subscription_id") == self.subscription
                    ):
                        yield event
