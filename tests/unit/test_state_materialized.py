"""MaterializedState: applying State Protocol events in stream order."""

from __future__ import annotations

import pytest

from durable_streams.state import InvalidEvent, MaterializedState, events


def test_inserts_updates_and_deletes_materialize_per_type_and_key():
    state = MaterializedState()
    state.apply_all(
        [
            events.insert("user", "1", {"name": "Alice"}),
            events.insert("user", "2", {"name": "Bob"}),
            events.update("user", "1", {"name": "Alice Smith"}),
            events.insert("room", "1", {"name": "lobby"}),
            events.delete("user", "2"),
        ]
    )
    assert state.get("user", "1") == {"name": "Alice Smith"}
    assert state.get("user", "2") is None
    assert state.get("user", "2", "gone") == "gone"
    assert state.get_type("user") == {"1": {"name": "Alice Smith"}}
    assert state.list("room") == [{"name": "lobby"}]
    assert state.list("nothing") == []
    assert sorted(state.types) == ["room", "user"]
    assert len(state) == 2
    assert state.applied == 5


def test_reset_clears_and_the_snapshot_after_it_refills():
    state = MaterializedState()
    state.apply(events.insert("user", "1", {"name": "stale"}))
    state.apply(events.reset())
    assert len(state) == 0
    state.apply(events.snapshot_start())
    assert state.in_snapshot
    state.apply(events.insert("user", "2", {"name": "fresh"}))
    state.apply(events.snapshot_end())
    assert not state.in_snapshot
    assert state.get_type("user") == {"2": {"name": "fresh"}}


def test_a_delete_of_an_unknown_key_and_an_update_of_one_are_tolerated():
    state = MaterializedState()
    state.apply(events.delete("user", "9"))
    state.apply(events.update("user", "8", {"n": 1}))
    assert state.get_type("user") == {"8": {"n": 1}}


def test_invalid_events_are_rejected_unless_validation_is_off():
    state = MaterializedState()
    bad = {"type": "user", "key": "1", "value": {}, "headers": {"operation": "upsert"}}
    with pytest.raises(InvalidEvent):
        state.apply(bad)
    assert len(state) == 0
    trusting = MaterializedState(validate=False)
    trusting.apply({"type": "user", "key": "1", "value": {}, "headers": {"operation": "insert"}})
    assert trusting.get("user", "1") == {}


def test_txids_of_applied_changes_are_remembered():
    state = MaterializedState()
    state.apply(events.insert("user", "1", {}, txid="tx-a"))
    assert state.has_txid("tx-a")
    assert not state.has_txid("tx-b")
