"""Generation fencing, leases and acks (spec 7 and 7.3), as pure rules.

The engine loads a subscription's row under its lock and asks these
functions what a request may do; nothing here touches the database, so every
rule is unit-tested on plain values.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .. import offsets
from .config import Ack, WakeRequest
from .errors import SubscriptionError, bad_offset
from .tokens import TokenClaims


@dataclass(frozen=True)
class WakeState:
    """The fencing fields of one subscription row."""

    pk: int
    generation: int
    wake_id: str | None
    holder: str | None
    lease_expires_at: dt.datetime | None

    def lease_expired(self, now: dt.datetime) -> bool:
        return self.lease_expires_at is not None and self.lease_expires_at <= now

    def is_idle(self, now: dt.datetime) -> bool:
        """No wake in flight and no lease held (spec 7)."""
        return self.wake_id is None and (self.holder is None or self.lease_expired(now))


def new_wake_id() -> str:
    """A wake id no other wake will ever have."""
    return "w_" + secrets.token_urlsafe(16)


def fenced() -> SubscriptionError:
    return SubscriptionError("FENCED", "wake generation is stale")


def check_wake(
    state: WakeState, claims: TokenClaims, request: WakeRequest, now: dt.datetime
) -> None:
    """Raise unless token and request name the current, live wake (spec 7.3).

    A token minted for another subscription (or an earlier incarnation of
    this id) is TOKEN_INVALID; a token or request for any other generation
    or wake, or a wake whose lease ran out, is FENCED.
    """
    if claims.subscription != state.pk:
        raise SubscriptionError("TOKEN_INVALID", "token is not valid for this subscription")
    if (
        state.wake_id is None
        or claims.generation != state.generation
        or claims.wake_id != state.wake_id
        or request.generation != state.generation
        or request.wake_id != state.wake_id
        or state.lease_expired(now)
    ):
        raise fenced()


def ack_positions(
    acks: Iterable[Ack], acked: Mapping[str, int], tails: Mapping[str, int]
) -> dict[str, int]:
    """The new acked position of each acked link, all checked before any applies.

    ``acked`` holds the links' current positions, ``tails`` the streams'
    tails. An ack names a linked stream and a real offset (no sentinel) that
    neither regresses the cursor nor passes the tail; otherwise the whole
    request is refused and nothing moves.
    """
    result: dict[str, int] = {}
    for ack in acks:
        if ack.stream not in acked:
            raise SubscriptionError(
                "INVALID_OFFSET",
                f"ack names a stream this subscription does not link: {ack.stream}",
            )
        if ack.offset in (offsets.BEGINNING, offsets.NOW):
            raise bad_offset(f"ack offset must be a concrete offset, not {ack.offset!r}")
        try:
            position = offsets.decode(ack.offset)
        except offsets.InvalidOffset:
            raise bad_offset(f"malformed ack offset {ack.offset!r}") from None
        current = max(acked[ack.stream], result.get(ack.stream, 0))
        if position < current:
            raise SubscriptionError(
                "INVALID_OFFSET", f"ack offset regresses the acked cursor of {ack.stream}"
            )
        if position > tails.get(ack.stream, 0):
            raise SubscriptionError(
                "INVALID_OFFSET", f"ack offset is beyond the tail of {ack.stream}"
            )
        result[ack.stream] = position
    return result
