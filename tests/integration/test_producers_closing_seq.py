"""Idempotent producers (5.2.1), closing (4.1, 5.3), Stream-Seq (5.2) and group
commit, through storage.append / append_batch against real Postgres."""

from __future__ import annotations

import random

import pytest

from durable_streams import api, content, offsets, storage
from durable_streams.exceptions import BadRequest, Conflict, Forbidden, NotFound, StreamError
from durable_streams.models import ProducerState
from durable_streams.producers import Producer

from ..support import read_bytes, unique

pytestmark = pytest.mark.django_db

CT = "text/plain"


def new_stream() -> str:
    path = unique()
    api.create_stream(path, content_type=CT)
    return path


def put(path, data=b"x", *, producer=None, close=False, stream_seq=None, content_type=CT):
    payload = content.Payload.raw(data) if data is not None else None
    return storage.append(
        path,
        content_type=content_type,
        payload=payload,
        producer=producer,
        close=close,
        stream_seq=stream_seq,
    )


def state(path: str, producer_id: str) -> tuple[int, int]:
    row = ProducerState.objects.get(stream_id=api.head(path).id, producer_id=producer_id)
    return row.epoch, row.last_seq


# --- idempotent producers -----------------------------------------------------------------


def test_producer_new_seq_is_appended_and_echoed():  # HTTP 200
    path = new_stream()
    result = put(path, b"a", producer=Producer("p", 0, 0))
    assert (result.duplicate, result.producer_epoch, result.producer_seq) == (False, 0, 0)
    result = put(path, b"b", producer=Producer("p", 0, 1))
    assert (result.duplicate, result.producer_seq, result.next_position) == (False, 1, 2)
    assert read_bytes(path) == b"ab"
    assert state(path, "p") == (0, 1)


def test_producer_retry_is_a_duplicate_that_writes_nothing():  # HTTP 204
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0))
    put(path, b"b", producer=Producer("p", 0, 1))
    for seq in (1, 0):
        result = put(path, b"dup", producer=Producer("p", 0, seq))
        assert result.duplicate is True
        # The highest accepted seq, whichever retry this was.
        assert (result.producer_epoch, result.producer_seq, result.next_position) == (0, 1, 2)
    assert read_bytes(path) == b"ab"


def test_producer_stale_epoch_is_forbidden_and_writes_nothing():  # HTTP 403
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0))
    put(path, b"b", producer=Producer("p", 1, 0))
    with pytest.raises(Forbidden) as info:
        put(path, b"zombie", producer=Producer("p", 0, 1))
    assert info.value.headers["Producer-Epoch"] == "1"
    assert read_bytes(path) == b"ab"
    assert state(path, "p") == (1, 0)


def test_producer_sequence_gap_conflicts_with_expected_and_received():  # HTTP 409
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0))
    with pytest.raises(Conflict) as info:
        put(path, b"c", producer=Producer("p", 0, 2))
    assert info.value.headers == {"Producer-Expected-Seq": "1", "Producer-Received-Seq": "2"}
    assert read_bytes(path) == b"a"
    assert state(path, "p") == (0, 0)


def test_new_producer_must_start_at_seq_zero():  # HTTP 409
    path = new_stream()
    with pytest.raises(Conflict) as info:
        put(path, producer=Producer("p", 0, 1))
    assert info.value.headers["Producer-Expected-Seq"] == "0"
    assert not ProducerState.objects.filter(stream_id=api.head(path).id).exists()


def test_producer_epoch_bump_must_start_at_seq_zero():  # HTTP 400
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0))
    with pytest.raises(BadRequest):
        put(path, b"b", producer=Producer("p", 1, 1))
    assert read_bytes(path) == b"a"


def test_producer_epoch_bump_resets_the_sequence():
    path = new_stream()
    for seq in range(3):
        put(path, b"0", producer=Producer("p", 0, seq))
    put(path, b"1", producer=Producer("p", 1, 0))
    put(path, b"1", producer=Producer("p", 1, 1))
    assert state(path, "p") == (1, 1)
    assert read_bytes(path) == b"00011"


def test_producers_are_independent_of_each_other_and_scoped_per_stream():
    one, two = new_stream(), new_stream()
    put(one, b"a", producer=Producer("p", 0, 0))
    put(one, b"b", producer=Producer("q", 0, 0))
    put(two, b"c", producer=Producer("p", 0, 0))  # same id, other stream: new
    assert read_bytes(one) == b"ab"
    assert read_bytes(two) == b"c"


def test_producer_and_stream_seq_together():
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0), stream_seq="001")
    # A retry carrying the same Stream-Seq is a duplicate, not a regression.
    assert put(path, b"a", producer=Producer("p", 0, 0), stream_seq="001").duplicate
    with pytest.raises(Conflict):
        put(path, b"b", producer=Producer("p", 0, 1), stream_seq="001")
    put(path, b"b", producer=Producer("p", 0, 1), stream_seq="002")
    assert read_bytes(path) == b"ab"


# --- Stream-Seq ----------------------------------------------------------------------------


def test_stream_seq_must_strictly_increase():
    path = new_stream()
    put(path, b"a", stream_seq="b")
    with pytest.raises(Conflict):
        put(path, b"x", stream_seq="b")
    with pytest.raises(Conflict):
        put(path, b"x", stream_seq="a")
    put(path, b"c", stream_seq="c")
    assert read_bytes(path) == b"ac"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("9", "10"),  # lexicographic, not numeric
        ("a", "B"),  # byte-wise: "B" (0x42) < "a" (0x61), unlike most collations
        ("a", "A"),
        ("é", "z"),  # é is 0xC3 0xA9 in UTF-8, above "z"
        ("ab", "a"),  # a prefix sorts first
        ("a-b", "a b"),
    ],
)
def test_stream_seq_is_compared_byte_wise(first, second):
    path = new_stream()
    put(path, b"1", stream_seq=first)
    with pytest.raises(Conflict):
        put(path, b"2", stream_seq=second)
    put(path, b"3", stream_seq=first + "\x7f")
    assert read_bytes(path) == b"13"


@pytest.mark.parametrize(("first", "second"), [("10", "9"), ("B", "a"), ("z", "é"), ("a", "ab")])
def test_byte_wise_greater_stream_seq_is_accepted(first, second):
    path = new_stream()
    put(path, b"1", stream_seq=first)
    put(path, b"2", stream_seq=second)
    assert read_bytes(path) == b"12"


def test_appends_without_stream_seq_do_not_reset_it():
    path = new_stream()
    put(path, b"1", stream_seq="5")
    put(path, b"2")
    with pytest.raises(Conflict):
        put(path, b"3", stream_seq="4")


# --- closing ---------------------------------------------------------------------------------


def test_close_only_closes_without_changing_the_tail():
    path = new_stream()
    put(path, b"abc")
    result = put(path, None, close=True)
    assert (result.closed, result.duplicate, result.next_position) == (True, False, 3)
    assert api.head(path).closed


def test_closing_again_is_an_idempotent_success():
    path = new_stream()
    put(path, None, close=True)
    result = put(path, None, close=True)
    assert (result.closed, result.duplicate) == (True, True)


def test_append_and_close_is_atomic():
    path = new_stream()
    result = put(path, b"final", close=True)
    assert (result.closed, result.next_position) == (True, 5)
    meta = api.head(path)
    assert (meta.closed, meta.tail) == (True, 5)


def test_append_to_a_closed_stream_conflicts_with_closed_headers():
    path = new_stream()
    put(path, b"abc", close=True)
    for close in (False, True):  # append-and-close is not idempotent either
        with pytest.raises(Conflict) as info:
            put(path, b"more", close=close)
        assert info.value.headers == {
            "Stream-Closed": "true",
            "Stream-Next-Offset": offsets.encode(3),
        }
    assert read_bytes(path) == b"abc"


def test_closed_stream_is_reported_before_a_content_type_mismatch():
    path = new_stream()
    put(path, None, close=True)
    with pytest.raises(Conflict) as info:
        put(path, b"x", content_type="application/json")
    assert info.value.headers.get("Stream-Closed") == "true"


def test_closed_stream_is_reported_before_an_invalid_body():
    path = new_stream()
    put(path, None, close=True)
    outcome = storage.append_batch(
        [
            storage.AppendRequest(
                path, content_type=CT, payload_error=BadRequest("body is not valid JSON")
            )
        ]
    )[0]
    assert isinstance(outcome, Conflict)
    assert outcome.headers.get("Stream-Closed") == "true"


def test_close_of_a_missing_stream_is_not_found():
    with pytest.raises(NotFound):
        put(unique(), None, close=True)


def test_closing_producer_tuple_retry_is_deduplicated():
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0))
    put(path, b"end", producer=Producer("p", 0, 1), close=True)
    assert api.head(path).closed_by == ("p", 0, 1)
    retry = put(path, b"end", producer=Producer("p", 0, 1), close=True)
    assert (retry.duplicate, retry.closed, retry.producer_epoch, retry.producer_seq) == (
        True,
        True,
        0,
        1,
    )
    assert read_bytes(path) == b"aend"


@pytest.mark.parametrize(
    "producer",
    [Producer("p", 0, 2), Producer("p", 0, 0), Producer("p", 1, 0), Producer("q", 0, 1)],
)
def test_any_other_producer_tuple_appending_to_a_closed_stream_conflicts(producer):
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0))
    put(path, b"end", producer=Producer("p", 0, 1), close=True)
    with pytest.raises(Conflict) as info:
        put(path, b"more", producer=producer, close=True)
    assert info.value.headers["Stream-Closed"] == "true"
    assert read_bytes(path) == b"aend"


def test_close_only_by_the_closing_producer_tuple_is_idempotent():
    path = new_stream()
    put(path, None, producer=Producer("p", 0, 0), close=True)
    again = put(path, None, producer=Producer("p", 0, 0), close=True)
    assert (again.duplicate, again.closed) == (True, True)
    assert put(path, None, close=True).closed  # a plain close-only stays idempotent


@pytest.mark.parametrize(
    "producer", [Producer("q", 0, 0), Producer("p", 0, 2), Producer("p", 1, 0)]
)
def test_close_only_by_another_producer_tuple_conflicts(producer):
    # Spec 5.2.1 and the official client conformance case
    # idempotent-producer-close-conflict: producer-1 appends and closes, a
    # close-only request of producer-2 then answers 409 with Stream-Closed.
    path = new_stream()
    put(path, b"a", producer=Producer("p", 0, 0))
    put(path, None, producer=Producer("p", 0, 1), close=True)
    with pytest.raises(Conflict) as info:
        put(path, None, producer=producer, close=True)
    assert info.value.headers["Stream-Closed"] == "true"
    assert read_bytes(path) == b"a"


def test_closure_is_monotonic():
    path = new_stream()
    put(path, None, close=True)
    with pytest.raises(BadRequest):
        put(path, None, close=False)  # there is no "reopen"
    with pytest.raises(Conflict):
        api.create_stream(path, content_type=CT)
    assert api.head(path).closed


# --- group commit: append_batch ------------------------------------------------------------


def test_append_batch_validates_each_request_in_order_as_if_sequential():
    path = new_stream()
    missing = unique()
    requests = [
        storage.AppendRequest(path, CT, content.Payload.raw(b"A"), producer=Producer("p", 0, 0)),
        storage.AppendRequest(path, CT, content.Payload.raw(b"A"), producer=Producer("p", 0, 0)),
        storage.AppendRequest(path, CT, content.Payload.raw(b"C"), producer=Producer("p", 0, 2)),
        storage.AppendRequest(path, CT, content.Payload.raw(b"B"), producer=Producer("p", 0, 1)),
        storage.AppendRequest(missing, CT, content.Payload.raw(b"?")),
        storage.AppendRequest(path, CT),
        storage.AppendRequest(path, "application/json", content.Payload.raw(b"1")),
        storage.AppendRequest(path, CT, content.Payload.raw(b"Z"), close=True),
        storage.AppendRequest(path, CT, content.Payload.raw(b"late")),
    ]
    outcomes = storage.append_batch(requests)
    first, dup, gap, second, not_found, empty, mismatch, final, late = outcomes
    assert (first.next_position, first.duplicate) == (1, False)
    assert (dup.next_position, dup.duplicate) == (1, True)
    assert isinstance(gap, Conflict) and gap.headers["Producer-Expected-Seq"] == "1"
    assert (second.next_position, second.duplicate) == (2, False)
    assert isinstance(not_found, NotFound)
    assert isinstance(empty, BadRequest)
    assert isinstance(mismatch, Conflict)
    assert (final.next_position, final.closed) == (3, True)
    assert isinstance(late, Conflict) and late.headers["Stream-Closed"] == "true"
    assert read_bytes(path) == b"ABZ"
    assert state(path, "p") == (0, 1)


def test_append_batch_over_several_streams_keeps_them_apart():
    a, b = new_stream(), new_stream()
    outcomes = storage.append_batch(
        [
            storage.AppendRequest(b, CT, content.Payload.raw(b"b1")),
            storage.AppendRequest(a, CT, content.Payload.raw(b"a1")),
            storage.AppendRequest(b, CT, content.Payload.raw(b"b2")),
        ]
    )
    assert not any(isinstance(o, StreamError) for o in outcomes)
    assert [o.next_position for o in outcomes] == [2, 2, 4]
    assert read_bytes(a) == b"a1"
    assert read_bytes(b) == b"b1b2"


def test_a_request_failing_in_the_database_does_not_fail_the_rest_of_its_batch():
    """Group commit must keep requests independent: a producer id too large for
    the database index (an error only Postgres notices) may fail its own
    request, but not the valid appends that happen to share its transaction."""
    path = new_stream()
    rng = random.Random(8)  # random, so Postgres cannot compress the index entry
    huge_id = "".join(chr(rng.randrange(33, 127)) for _ in range(9000))
    outcomes = storage.append_batch(
        [
            storage.AppendRequest(path, CT, content.Payload.raw(b"good1")),
            storage.AppendRequest(
                path, CT, content.Payload.raw(b"bad"), producer=Producer(huge_id, 0, 0)
            ),
            storage.AppendRequest(path, CT, content.Payload.raw(b"good2")),
        ]
    )
    assert not isinstance(outcomes[0], StreamError)
    assert isinstance(outcomes[1], StreamError) and 400 <= outcomes[1].status < 500
    assert not isinstance(outcomes[2], StreamError)
    assert read_bytes(path) == b"good1good2"
