"""Idempotent producer validation (spec 5.2.1).

Pure logic: the storage layer calls :func:`validate` with the stored state
while it holds the stream's row lock, so validation and the append commit in
one transaction and requests of one producer are serialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .exceptions import BadRequest, Conflict, Forbidden
from .headers import parse_int

MAX_INT = 2**53 - 1
# Producer ids are indexed; Postgres refuses index entries past ~2.7 kB.
MAX_PRODUCER_ID_BYTES = 1024


@dataclass(frozen=True)
class Producer:
    """The ``Producer-Id``/``-Epoch``/``-Seq`` headers of one request."""

    producer_id: str
    epoch: int
    seq: int


class Outcome(Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"


def from_headers(producer_id: str | None, epoch: str | None, seq: str | None) -> Producer | None:
    """Parse the three producer headers; all or none must be present."""
    given = [h is not None for h in (producer_id, epoch, seq)]
    if not any(given):
        return None
    if not all(given):
        raise BadRequest("Producer-Id, Producer-Epoch and Producer-Seq go together")
    assert producer_id is not None and epoch is not None and seq is not None
    if not producer_id.strip():
        raise BadRequest("Producer-Id must not be empty")
    return Producer(
        producer_id,
        parse_int("Producer-Epoch", epoch, maximum=MAX_INT),
        parse_int("Producer-Seq", seq, maximum=MAX_INT),
    )


def validate(state: tuple[int, int] | None, producer: Producer) -> Outcome:
    """Decide a request against the stored ``(epoch, last_seq)``.

    Raises the protocol error for stale epochs (403), a new epoch not starting
    at 0 (400) and sequence gaps (409).
    """
    if len(producer.producer_id.encode("utf-8", "surrogatepass")) > MAX_PRODUCER_ID_BYTES:
        raise BadRequest(f"Producer-Id is longer than {MAX_PRODUCER_ID_BYTES} bytes")
    if state is None:
        if producer.seq != 0:
            raise _gap(0, producer.seq)
        return Outcome.ACCEPT
    epoch, last_seq = state
    if producer.epoch < epoch:
        raise Forbidden("stale producer epoch", headers={"Producer-Epoch": str(epoch)})
    if producer.epoch > epoch:
        if producer.seq != 0:
            raise BadRequest("a new producer epoch must start at Producer-Seq 0")
        return Outcome.ACCEPT
    if producer.seq <= last_seq:
        return Outcome.DUPLICATE
    if producer.seq == last_seq + 1:
        return Outcome.ACCEPT
    raise _gap(last_seq + 1, producer.seq)


def _gap(expected: int, received: int) -> Conflict:
    return Conflict(
        "producer sequence gap",
        headers={"Producer-Expected-Seq": str(expected), "Producer-Received-Seq": str(received)},
    )
