"""Idempotent producer validation: the full table of spec 5.2.1."""

from __future__ import annotations

import pytest

from durable_streams.exceptions import BadRequest, Conflict, Forbidden
from durable_streams.producers import MAX_INT, Outcome, Producer, from_headers, validate

# --- validate(state, producer) ------------------------------------------------------------


def test_new_producer_starting_at_seq_zero_is_accepted():
    assert validate(None, Producer("p", 0, 0)) is Outcome.ACCEPT


def test_new_producer_may_start_at_any_epoch_with_seq_zero():
    assert validate(None, Producer("p", 7, 0)) is Outcome.ACCEPT


def test_new_producer_not_starting_at_seq_zero_is_a_gap_conflict():
    with pytest.raises(Conflict) as info:
        validate(None, Producer("p", 0, 3))
    assert info.value.status == 409
    assert info.value.headers == {"Producer-Expected-Seq": "0", "Producer-Received-Seq": "3"}


def test_stale_epoch_is_forbidden_and_reports_the_current_epoch():
    with pytest.raises(Forbidden) as info:
        validate((5, 10), Producer("p", 4, 11))
    assert info.value.status == 403
    assert info.value.headers == {"Producer-Epoch": "5"}


def test_stale_epoch_is_forbidden_even_for_seq_zero():
    with pytest.raises(Forbidden):
        validate((1, 0), Producer("p", 0, 0))


def test_new_epoch_starting_at_seq_zero_is_accepted():
    assert validate((1, 42), Producer("p", 2, 0)) is Outcome.ACCEPT
    assert validate((1, 42), Producer("p", 9, 0)) is Outcome.ACCEPT


def test_new_epoch_not_starting_at_seq_zero_is_a_bad_request():
    with pytest.raises(BadRequest) as info:
        validate((1, 42), Producer("p", 2, 1))
    assert info.value.status == 400


@pytest.mark.parametrize("seq", [0, 5, 9, 10])
def test_same_epoch_seq_at_or_below_last_is_a_duplicate(seq):
    assert validate((3, 10), Producer("p", 3, seq)) is Outcome.DUPLICATE


def test_same_epoch_next_seq_is_accepted():
    assert validate((3, 10), Producer("p", 3, 11)) is Outcome.ACCEPT


@pytest.mark.parametrize("seq", [12, 13, MAX_INT])
def test_same_epoch_seq_past_the_next_is_a_gap_conflict(seq):
    with pytest.raises(Conflict) as info:
        validate((3, 10), Producer("p", 3, seq))
    assert info.value.headers == {
        "Producer-Expected-Seq": "11",
        "Producer-Received-Seq": str(seq),
    }


# --- from_headers -------------------------------------------------------------------------


def test_no_producer_headers_means_no_producer():
    assert from_headers(None, None, None) is None


@pytest.mark.parametrize(
    "given",
    [
        ("p", None, None),
        (None, "0", None),
        (None, None, "0"),
        ("p", "0", None),
        ("p", None, "0"),
        (None, "0", "0"),
    ],
)
def test_producer_headers_must_come_together(given):
    with pytest.raises(BadRequest):
        from_headers(*given)


@pytest.mark.parametrize("producer_id", ["", " ", "\t"])
def test_producer_id_must_not_be_empty(producer_id):
    with pytest.raises(BadRequest):
        from_headers(producer_id, "0", "0")


@pytest.mark.parametrize(
    "value",
    ["", "-1", "+1", "1.0", "1e3", "01", "00", "abc", "0x1", "²", "\u0661", str(MAX_INT + 1)],
)
def test_epoch_and_seq_must_be_plain_non_negative_integers_up_to_2_53_minus_1(value):
    with pytest.raises(BadRequest):
        from_headers("p", value, "0")
    with pytest.raises(BadRequest):
        from_headers("p", "0", value)


def test_valid_producer_headers_are_parsed_and_surrounding_space_ignored():
    assert from_headers("order-service-1", " 3 ", "0") == Producer("order-service-1", 3, 0)
    assert from_headers("p", str(MAX_INT), str(MAX_INT)) == Producer("p", MAX_INT, MAX_INT)
