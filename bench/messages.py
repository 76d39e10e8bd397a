"""The messages the benchmark writes, and the checks on what it reads back.

Every message is compact JSON of exactly ``MSG_SIZE`` bytes whose content is
fixed by who wrote it and its sequence number (plus, for live scenarios, the
send time in microseconds on the machine-wide monotonic clock, so a reader in
another process can compute the delivery latency). A JSON stream answers a
read with a JSON array of the messages; the reader parses it and re-encodes
each element with orjson, which yields exactly the bytes that were sent if
the server kept them intact (the writer encodes the same compact way), so
the comparison is byte-exact per message while allowing a server to choose
how it frames the array.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import orjson

MSG_SIZE = 100
_PAD = "abcdefghijklmnopqrstuvwxyz" * 8


def app_msg(writer: int, seq: int) -> bytes:
    """Message ``seq`` of ``writer`` (scenarios 1 and 2): fully deterministic."""
    prefix = b'{"w":%d,"s":%d,"p":"' % (writer, seq)
    k = (seq * 7 + writer) % 26
    n = MSG_SIZE - len(prefix) - 2
    return prefix + _PAD[k : k + n].encode() + b'"}'


def live_msg(seq: int, sent_us: int) -> bytes:
    """Message ``seq`` of the live writer, stamped with its send time (µs)."""
    prefix = b'{"s":%d,"t":%d,"p":"' % (seq, sent_us)
    k = seq % 26
    n = MSG_SIZE - len(prefix) - 2
    return prefix + _PAD[k : k + n].encode() + b'"}'


def json_batch(msgs: list[bytes]) -> bytes:
    """A POST body appending several messages to a JSON stream (one array level is flattened)."""
    return b"[" + b",".join(msgs) + b"]"


def canonical(obj: object) -> bytes:
    return orjson.dumps(obj)


@dataclass
class WriterLedger:
    """What one writer sent: sequence numbers 0..sent-1, some with an unknown outcome."""

    sent: int = 0
    uncertain: set[int] = field(default_factory=set)


def verify_app_messages(
    elements: list[object], ledgers: dict[int, WriterLedger]
) -> tuple[int, list[str]]:
    """Check a stream read back against what its writers sent.

    Byte-exact content per message; per writer, sequence numbers strictly
    increasing (no duplicate, none out of order); every acknowledged message
    present; nothing present that was never sent (only messages whose request
    failed may be either). Returns (number of problems, first descriptions).
    """
    problems: list[str] = []
    count = 0

    def problem(text: str) -> None:
        nonlocal count
        count += 1
        if len(problems) < 5:
            problems.append(text)

    last: dict[int, int] = defaultdict(lambda: -1)
    seen: dict[int, set[int]] = defaultdict(set)
    for el in elements:
        if not isinstance(el, dict) or "w" not in el or "s" not in el:
            problem(f"foreign element {str(el)[:60]}")
            continue
        w, s = el["w"], el["s"]
        if canonical(el) != app_msg(w, s):
            problem(f"writer {w} message {s}: bytes differ")
        if w not in ledgers or s >= ledgers[w].sent or s < 0:
            problem(f"writer {w} message {s} was never sent")
        if s <= last[w]:
            problem(f"writer {w} message {s} after {last[w]} (duplicate or out of order)")
        last[w] = max(last[w], s)
        seen[w].add(s)
    for w, ledger in ledgers.items():
        acked_seen = sum(1 for s in seen[w] if 0 <= s < ledger.sent and s not in ledger.uncertain)
        missing = ledger.sent - len(ledger.uncertain) - acked_seen
        if missing > 0:
            problem(f"writer {w}: {missing} acknowledged messages missing")
    return count, problems


def parse_live_event(data: bytes) -> tuple[list[int], list[int], bytes]:
    """Sequence numbers, send times and canonical bytes (each + LF) of an array of live messages."""
    elements = orjson.loads(data)
    if not isinstance(elements, list):
        elements = [elements]
    seqs = []
    stamps = []
    blob = []
    for el in elements:
        seqs.append(el["s"])
        stamps.append(el["t"])
        blob.append(canonical(el))
    return seqs, stamps, b"".join(b + b"\n" for b in blob)
