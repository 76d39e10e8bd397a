"""State Protocol event builders and the schema the project validates them with."""

from __future__ import annotations

import json

import pytest

from durable_streams.state import events

# The examples of STATE-PROTOCOL.md sections 4 and 8: all valid.
SPEC_EXAMPLES = [
    {
        "type": "user",
        "key": "user:123",
        "value": {"name": "Alice", "email": "alice@example.com"},
        "headers": {"operation": "insert", "timestamp": "2025-01-15T10:30:00Z"},
    },
    {
        "type": "user",
        "key": "user:123",
        "value": {"name": "Alice", "email": "alice.new@example.com"},
        "old_value": {"name": "Alice", "email": "alice@example.com"},
        "headers": {"operation": "update", "timestamp": "2025-01-15T10:35:00Z"},
    },
    {
        "type": "user",
        "key": "user:123",
        "old_value": {"name": "Alice"},
        "headers": {"operation": "delete", "timestamp": "2025-01-15T10:40:00Z"},
    },
    {
        "type": "user",
        "key": "user:123",
        "value": None,
        "old_value": {"name": "Alice"},
        "headers": {"operation": "delete"},
    },
    {"headers": {"control": "snapshot-start", "offset": "123456_000"}},
    {"headers": {"control": "snapshot-end", "offset": "123456_789"}},
    {"headers": {"control": "reset", "offset": "123456_000"}},
    {"type": "config", "key": "theme", "value": "dark", "headers": {"operation": "insert"}},
    {
        "type": "presence",
        "key": "user:123",
        "value": {"status": "online", "lastSeen": 1705312200000},
        "headers": {"operation": "update", "txid": "t-1"},
    },
]


@pytest.mark.parametrize("event", SPEC_EXAMPLES)
def test_spec_examples_are_valid(event):
    assert events.validate(event) is event


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"type": "u", "key": "1", "headers": {"operation": "insert"}}, "'value' is a required"),
        ({"type": "u", "key": "1", "headers": {"operation": "update"}}, "'value' is a required"),
        (
            {"type": "u", "key": "1", "value": 1, "headers": {"operation": "upsert"}},
            "'upsert' is not one of",
        ),
        ({"type": "", "key": "1", "value": 1, "headers": {"operation": "insert"}}, "non-empty"),
        ({"type": "u", "key": "", "value": 1, "headers": {"operation": "insert"}}, "non-empty"),
        ({"type": "u", "key": 1, "value": 1, "headers": {"operation": "insert"}}, "not of type"),
        (
            {"type": "u", "key": "1", "value": 1, "headers": {"operation": "insert"}, "x": 1},
            "'x' was unexpected",
        ),
        (
            {"type": "u", "key": "1", "value": 1, "headers": {"operation": "insert", "y": 1}},
            "'y' was unexpected",
        ),
        (
            {"type": "u", "key": "1", "value": 1, "headers": {"operation": "insert", "txid": ""}},
            "non-empty",
        ),
        (
            {
                "type": "u",
                "key": "1",
                "value": 1,
                "headers": {"operation": "insert", "timestamp": "yesterday"},
            },
            "is not a 'date-time'",
        ),
        ({"headers": {"control": "rewind"}}, "'rewind' is not one of"),
        ({"headers": {"control": "reset"}, "type": "u"}, "'type' was unexpected"),
        ({"headers": {"control": "reset", "offset": ""}}, "non-empty"),
        ({"headers": {}}, "event"),
        ([{"headers": {"control": "reset"}}], "is not of type 'object'"),
    ],
)
def test_invalid_events_are_rejected_with_the_problem_named(event, problem):
    with pytest.raises(events.InvalidEvent, match="invalid State Protocol event") as caught:
        events.validate(event)
    assert problem in str(caught.value)


def test_builders_produce_exactly_the_protocol_fields():
    stamp = events.timestamp()
    assert events.insert("room", "1", {"name": "a"}, txid="t", timestamp=stamp) == {
        "type": "room",
        "key": "1",
        "value": {"name": "a"},
        "headers": {"operation": "insert", "txid": "t", "timestamp": stamp},
    }
    assert events.update("room", "1", {"name": "b"}, old_value={"name": "a"}) == {
        "type": "room",
        "key": "1",
        "value": {"name": "b"},
        "old_value": {"name": "a"},
        "headers": {"operation": "update"},
    }
    assert events.delete("room", "1") == {
        "type": "room",
        "key": "1",
        "headers": {"operation": "delete"},
    }
    assert events.delete("room", "1", old_value=None)["old_value"] is None
    assert events.snapshot_start() == {"headers": {"control": "snapshot-start"}}
    assert events.snapshot_end("0000000000000000_0000000000000003") == {
        "headers": {"control": "snapshot-end", "offset": "0000000000000000_0000000000000003"}
    }
    assert events.reset() == {"headers": {"control": "reset"}}


def test_builders_refuse_what_the_schema_refuses():
    with pytest.raises(events.InvalidEvent):
        events.insert("room", "", {"name": "a"})
    with pytest.raises(events.InvalidEvent):
        events.change("upsert", "room", "1", {})
    with pytest.raises(events.InvalidEvent):
        events.update("room", "1", {}, txid="")


def test_timestamps_are_rfc3339_utc():
    import datetime as dt

    when = dt.datetime(2025, 1, 15, 11, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert events.timestamp(when) == "2025-01-15T10:30:00Z"
    events.insert("u", "1", {}, timestamp=events.timestamp())  # accepted by the schema
    with pytest.raises(ValueError):
        events.timestamp(dt.datetime(2025, 1, 15))


def test_the_projects_schema_is_the_published_draft07_schema_with_closed_objects():
    schema = json.loads(events.SCHEMA_PATH.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    definitions = schema["definitions"]
    for name in ("ChangeMessage", "ChangeHeaders", "ControlMessage", "ControlHeaders"):
        assert definitions[name]["additionalProperties"] is False
    assert definitions["ChangeHeaders"]["properties"]["operation"]["enum"] == list(
        events.OPERATIONS
    )
    assert definitions["ControlHeaders"]["properties"]["control"]["enum"] == list(events.CONTROLS)


def test_is_change_and_is_control():
    assert events.is_change(SPEC_EXAMPLES[0]) and not events.is_control(SPEC_EXAMPLES[0])
    assert events.is_control(SPEC_EXAMPLES[4]) and not events.is_change(SPEC_EXAMPLES[4])
    assert not events.is_change([]) and not events.is_control({"headers": "x"})
