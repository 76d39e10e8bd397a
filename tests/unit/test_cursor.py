"""Live-read cursors (spec 10.1): interval numbers that never go backwards."""

from __future__ import annotations

import itertools
import time
import types

import pytest
from django.test import override_settings

from durable_streams import cursor as cursors

EPOCH = 1728432000
INTERVAL = 20


@pytest.fixture
def clock(monkeypatch):
    """Freeze the clock next_cursor reads; returns a setter."""
    state = {"now": EPOCH + 1000 * INTERVAL + 7}
    fake = types.SimpleNamespace(time=lambda: state["now"], monotonic=time.monotonic)
    monkeypatch.setattr(cursors, "time", fake)

    def set_now(value: float) -> None:
        state["now"] = value

    return set_now


def test_cursor_is_the_current_interval_number_since_the_epoch(clock):
    assert cursors.next_cursor(None) == "1000"
    clock(EPOCH + 1001 * INTERVAL)
    assert cursors.next_cursor(None) == "1001"


def test_cursor_matches_the_real_clock():
    before = int((time.time() - EPOCH) // INTERVAL)
    cursor = int(cursors.next_cursor(None))
    after = int((time.time() - EPOCH) // INTERVAL)
    assert before <= cursor <= after


def test_an_older_client_cursor_gets_the_current_interval(clock):
    assert cursors.next_cursor("999") == "1000"
    assert cursors.next_cursor("0") == "1000"
    assert cursors.next_cursor("-5") == "1000"


@pytest.mark.parametrize("client", ["1000", "1001", "5000"])
def test_a_current_or_future_client_cursor_gets_a_strictly_greater_one(clock, client):
    cursor = int(cursors.next_cursor(client))
    assert cursor > int(client)
    # Jitter of 1-3600 seconds, in whole intervals: at least 1, at most 3600/20.
    assert 1 <= cursor - int(client) <= 3600 // INTERVAL


def test_readers_that_held_the_same_cursor_get_the_same_next_one(clock):
    # After an idle timeout every reader of one cache key asks again with the
    # cursor it held: they must land on one next key, not scatter.
    current = cursors.next_cursor(None)
    answers = {cursors.next_cursor(current) for _ in range(500)}
    assert len(answers) == 1
    clock(EPOCH + 1000 * INTERVAL + 19)  # later in the same interval: same answer
    assert cursors.next_cursor(current) in answers


def test_the_jitter_spreads_over_the_spec_range_across_cursors(clock):
    steps = {int(cursors.next_cursor(str(c))) - c for c in range(1000, 3000)}
    assert min(steps) >= 1 and max(steps) <= 3600 // INTERVAL
    # Not one fixed step: different keys still move apart, as random jitter did.
    assert len(steps) > 100


@pytest.mark.parametrize("client", ["", "abc", "1.5", "1e3", "0x10", "9" * 5000])
def test_an_unparseable_client_cursor_is_ignored(clock, client):
    assert cursors.next_cursor(client) == "1000"


def test_echoing_cursors_back_is_strictly_monotonic_even_without_time_passing(clock):
    cursor = cursors.next_cursor(None)
    seen = [int(cursor)]
    for _ in range(200):
        cursor = cursors.next_cursor(cursor)
        seen.append(int(cursor))
    assert all(b > a for a, b in itertools.pairwise(seen))


def test_cursor_never_goes_backwards_as_time_moves_on(clock):
    cursor = cursors.next_cursor(None)
    for step in range(1, 100):
        clock(EPOCH + 1000 * INTERVAL + step * 7)
        nxt = cursors.next_cursor(cursor)
        assert int(nxt) > int(cursor)
        cursor = nxt


def test_cursor_interval_and_epoch_come_from_settings(clock):
    clock(EPOCH + 1000)
    with override_settings(DURABLE_STREAMS={"CURSOR_INTERVAL": 10, "CURSOR_EPOCH": EPOCH}):
        assert cursors.next_cursor(None) == "100"
    with override_settings(DURABLE_STREAMS={"CURSOR_INTERVAL": 100, "CURSOR_EPOCH": EPOCH - 1000}):
        assert cursors.next_cursor(None) == "20"
