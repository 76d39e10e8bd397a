"""State Protocol events: builders for change and control events, and validation.

Every event built here is checked against ``schema.json`` (kept beside this
module: the published State Protocol schema, draft-07), which forbids keys it
does not name, so what this module emits is exactly what any State Protocol
client accepts. ``headers.timestamp`` is checked as an RFC 3339 date-time.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

__all__ = [
    "CONTROLS",
    "OPERATIONS",
    "InvalidEvent",
    "change",
    "delete",
    "insert",
    "is_change",
    "is_control",
    "reset",
    "snapshot_end",
    "snapshot_start",
    "timestamp",
    "update",
    "validate",
]

OPERATIONS = ("insert", "update", "delete")
CONTROLS = ("snapshot-start", "snapshot-end", "reset")
SCHEMA_PATH = Path(__file__).with_name("schema.json")

# Distinguishes "no value" from a null value (a delete may carry either).
_MISSING: Any = object()


class InvalidEvent(ValueError):
    """An event that the State Protocol schema rejects."""


@cache
def _validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    # The format checker checks headers.timestamp as an RFC 3339 date-time
    # (jsonschema uses rfc3339-validator for that, a declared dependency).
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def validate(event: Any) -> dict:
    """Return ``event`` if it is a valid State Protocol event, else raise
    :class:`InvalidEvent` naming the first problem."""
    error = best_match(_validator().iter_errors(event))
    if error is not None:
        if error.validator == "oneOf" and error.context:
            # Report the problem with the branch the event means to be (control
            # events name headers.control), not "valid under none of them".
            branch = 1 if is_control(event) else 0
            error = best_match(e for e in error.context if e.relative_schema_path[0] == branch)
        where = "/".join(str(p) for p in error.absolute_path) or "event"
        raise InvalidEvent(f"invalid State Protocol event ({where}): {error.message}")
    return event


def timestamp(when: dt.datetime | None = None) -> str:
    """An RFC 3339 timestamp in UTC with microseconds (``...T10:30:00.123456Z``)."""
    when = when or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        raise ValueError("timestamps need an aware datetime")
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def change(
    operation: str,
    type: str,
    key: str,
    value: Any = _MISSING,
    *,
    old_value: Any = _MISSING,
    txid: str | None = None,
    timestamp: str | None = None,
) -> dict:
    """A change event. ``value`` is required for insert and update; pass
    ``old_value`` to include the previous value."""
    headers: dict[str, str] = {"operation": operation}
    if txid is not None:
        headers["txid"] = txid
    if timestamp is not None:
        headers["timestamp"] = timestamp
    event: dict[str, Any] = {"type": type, "key": key}
    if value is not _MISSING:
        event["value"] = value
    if old_value is not _MISSING:
        event["old_value"] = old_value
    event["headers"] = headers
    return validate(event)


def insert(type: str, key: str, value: Any, **headers: Any) -> dict:
    """An insert event (``old_value`` is not sent for inserts)."""
    return change("insert", type, key, value, **headers)


def update(type: str, key: str, value: Any, *, old_value: Any = _MISSING, **headers: Any) -> dict:
    """An update event, optionally with the previous value."""
    return change("update", type, key, value, old_value=old_value, **headers)


def delete(type: str, key: str, *, old_value: Any = _MISSING, **headers: Any) -> dict:
    """A delete event (no ``value``), optionally with the deleted value."""
    return change("delete", type, key, old_value=old_value, **headers)


def _control(control: str, offset: str | None) -> dict:
    headers = {"control": control}
    if offset is not None:
        headers["offset"] = offset
    return validate({"headers": headers})


def snapshot_start(offset: str | None = None) -> dict:
    """Marks the start of a full snapshot of the stream's state."""
    return _control("snapshot-start", offset)


def snapshot_end(offset: str | None = None) -> dict:
    """Marks the end of a full snapshot of the stream's state."""
    return _control("snapshot-end", offset)


def reset(offset: str | None = None) -> dict:
    """Tells clients to clear their state. Always follow it with a full
    snapshot in the same stream: clients treat it as "clear", not "re-read"."""
    return _control("reset", offset)


def is_change(event: Any) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("headers"), dict)
        and ("operation" in event["headers"])
    )


def is_control(event: Any) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("headers"), dict)
        and ("control" in event["headers"])
    )
