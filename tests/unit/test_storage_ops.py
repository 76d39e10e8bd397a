"""The storage operations' logic without a database.

Each operation is a generator that yields the queries it needs and receives
their results (durable_streams.storage.drivers). These tests play the driver:
they answer each yielded query with the rows the test sets up, and check what
the operation decides and which writes it asks for. The SQL itself is
exercised against Postgres by the integration tests.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from durable_streams import offsets
from durable_streams.content import Payload, parse_body
from durable_streams.exceptions import BadRequest, Conflict, Forbidden, NotFound
from durable_streams.producers import Producer
from durable_streams.storage import AppendRequest, AppendResult, Q, StreamMeta, forks
from durable_streams.storage.appends import Tail, apply, batch
from durable_streams.storage.reads import json_slice, read_range

NOW = timezone.now()


def meta(**fields) -> StreamMeta:
    values = {
        "id": 1,
        "path": "s",
        "content_type": "text/plain",
        "ttl_seconds": None,
        "expires_at": None,
        "closed": False,
        "tail": 0,
        "created_at": NOW,
        "last_access_at": NOW,
        "last_stream_seq": None,
        "closed_by": None,
        "forked_from_id": None,
        "fork_offset": None,
        "deleted_at": None,
    }
    values.update(fields)
    return StreamMeta(**values)


def row_of(m: StreamMeta) -> tuple:
    """``m`` as the row ``SELECT COLUMNS`` returns."""
    closed_by = m.closed_by or (None, None, None)
    return (
        m.id,
        m.path,
        m.content_type,
        m.ttl_seconds,
        m.expires_at,
        m.closed,
        m.tail,
        m.created_at,
        m.last_access_at,
        m.last_stream_seq,
        *closed_by,
        m.forked_from_id,
        m.fork_offset,
        m.deleted_at,
    )


def drive(op, answer):
    """Run ``op`` to its end, answering each query with ``answer(query)``.

    Returns the op's value and every query it yielded.
    """
    queries: list[Q] = []
    try:
        query = next(op)
        while True:
            queries.append(query)
            query = op.send(answer(query))
    except StopIteration as stop:
        return stop.value, queries


def text(data: str) -> AppendRequest:
    return AppendRequest("s", "text/plain", Payload.raw(data.encode()))


# --- apply: the rules of one append ------------------------------------------------------


def test_apply_stages_the_payload_at_the_tail_and_advances_it():
    state = Tail(meta(tail=5), {})
    result = apply(state, text("abc"))
    assert result == AppendResult(8, False)
    assert state.tail == 8
    assert [(start, p.data) for start, p in state.segments] == [(5, b"abc")]
    assert state.changed


def test_apply_checks_requests_against_what_earlier_ones_staged():
    state = Tail(meta(), {})
    apply(state, AppendRequest("s", "text/plain", Payload.raw(b"x"), stream_seq="b"))
    with pytest.raises(Conflict, match="Stream-Seq sequence conflict"):
        apply(state, AppendRequest("s", "text/plain", Payload.raw(b"y"), stream_seq="a"))
    assert state.tail == 1  # the rejected request staged nothing


def test_apply_refuses_a_body_of_another_content_type():
    with pytest.raises(Conflict, match="Content-Type does not match"):
        apply(Tail(meta(), {}), AppendRequest("s", "application/json", Payload.raw(b"1")))


def test_apply_requires_a_content_type_with_a_body():
    with pytest.raises(BadRequest, match="Content-Type is required"):
        apply(Tail(meta(), {}), AppendRequest("s", None, Payload.raw(b"x")))


def test_apply_reports_a_bad_body_only_after_the_content_type_check():
    bad = BadRequest("invalid JSON")
    with pytest.raises(Conflict):
        apply(Tail(meta(), {}), AppendRequest("s", "application/json", payload_error=bad))
    with pytest.raises(BadRequest, match="invalid JSON"):
        apply(Tail(meta(), {}), AppendRequest("s", "text/plain", payload_error=bad))


def test_apply_to_a_closed_stream():
    state = Tail(meta(tail=3, closed=True), {})
    # A repeated close is a duplicate, a body is refused with the final offset.
    assert apply(state, AppendRequest("s", close=True)) == AppendResult(3, True, duplicate=True)
    with pytest.raises(Conflict) as refused:
        apply(state, text("late"))
    assert refused.value.headers["Stream-Closed"] == "true"
    assert refused.value.headers["Stream-Next-Offset"] == offsets.encode(3)


def test_apply_recognises_a_retry_of_the_close_that_closed_the_stream():
    producer = Producer("p", 1, 4)
    state = Tail(meta(tail=3, closed=True, closed_by=("p", 1, 4)), {})
    result = apply(state, AppendRequest("s", "text/plain", Payload.raw(b"x"), producer=producer))
    assert result.duplicate and result.closed and result.producer_seq == 4


def test_apply_tracks_producer_sequences():
    state = Tail(meta(), {"p": (0, 1)})
    first = apply(
        state, AppendRequest("s", "text/plain", Payload.raw(b"a"), producer=Producer("p", 0, 2))
    )
    assert (first.duplicate, first.producer_seq) == (False, 2)
    again = apply(
        state, AppendRequest("s", "text/plain", Payload.raw(b"a"), producer=Producer("p", 0, 2))
    )
    assert again.duplicate and state.tail == 1
    with pytest.raises(Conflict):
        apply(
            state, AppendRequest("s", "text/plain", Payload.raw(b"b"), producer=Producer("p", 0, 5))
        )
    with pytest.raises(Forbidden):
        apply(
            state,
            AppendRequest("s", "text/plain", Payload.raw(b"b"), producer=Producer("p", -1, 0)),
        )
    assert state.touched_producers == {"p"}


def test_apply_closing_records_the_producer_that_closed():
    state = Tail(meta(), {})
    result = apply(state, AppendRequest("s", close=True, producer=Producer("p", 0, 0)))
    assert result.closed and state.closed and state.closed_by == ("p", 0, 0)


# --- batch: locking, loading and storing around apply ----------------------------------------


class Rows:
    """Answers a batch's queries from stream rows kept in memory."""

    def __init__(self, *streams: StreamMeta, producers: dict | None = None) -> None:
        self.streams = {m.path: m for m in streams}
        self.producers = producers or {}

    def __call__(self, query: Q):
        if "FOR UPDATE" in query.sql and "WHERE path" in query.sql:
            found = self.streams.get(query.params[0])
            return row_of(found) if found else None
        if query.sql.startswith("SELECT producer_id"):
            return [(pid, *state) for pid, state in self.producers.items()]
        return None


def test_a_batch_locks_streams_in_path_order_and_writes_each_once():
    requests = [
        AppendRequest("b", "text/plain", Payload.raw(b"1")),
        AppendRequest("a", "text/plain", Payload.raw(b"22")),
        AppendRequest("b", "text/plain", Payload.raw(b"333")),
    ]
    rows = Rows(meta(id=1, path="a", tail=10), meta(id=2, path="b"))
    outcomes, queries = drive(batch(requests), rows)
    assert [o.next_position for o in outcomes] == [1, 12, 4]
    locks = [q.params[0] for q in queries if "FOR UPDATE" in q.sql]
    assert locks == ["a", "b"]
    notifies = [q.params[1] for q in queries if "pg_notify" in q.sql]
    assert notifies == ["1", "2"]
    inserts = [q for q in queries if q.sql.startswith("INSERT INTO") and q.many]
    assert [row[:3] for q in inserts for row in q.params] == [[1, 10, 12], [2, 0, 1], [2, 1, 4]]


def test_a_batch_gives_each_request_its_own_outcome():
    requests = [
        AppendRequest("s", "text/plain", Payload.raw(b"ok")),
        AppendRequest("s", "application/json", Payload.raw(b"1")),
        AppendRequest("missing", "text/plain", Payload.raw(b"x")),
        AppendRequest("", "text/plain", Payload.raw(b"x")),
        AppendRequest("s"),
    ]
    outcomes, _ = drive(batch(requests), Rows(meta()))
    assert outcomes[0] == AppendResult(2, False)
    assert isinstance(outcomes[1], Conflict)
    assert isinstance(outcomes[2], NotFound)
    assert isinstance(outcomes[3], BadRequest)  # empty path
    assert isinstance(outcomes[4], BadRequest)  # nothing to append


def test_a_batch_that_changes_nothing_writes_nothing():
    requests = [AppendRequest("s", "application/json", Payload.raw(b"1"))]
    outcomes, queries = drive(batch(requests), Rows(meta()))
    assert isinstance(outcomes[0], Conflict)
    assert [q for q in queries if "FOR UPDATE" not in q.sql] == []


def test_a_batch_loads_and_stores_producer_state():
    request = AppendRequest("s", "text/plain", Payload.raw(b"x"), producer=Producer("p", 0, 3))
    outcomes, queries = drive(batch([request]), Rows(meta(), producers={"p": (0, 2)}))
    assert outcomes[0].producer_seq == 3
    (upsert,) = [q for q in queries if "ON CONFLICT (stream_id, producer_id)" in q.sql]
    assert upsert.params[0][:4] == [1, "p", 0, 3]


# --- forks: layers of a chain ----------------------------------------------------------------


@pytest.fixture
def fresh_chains():
    forks._chains.clear()
    yield
    forks._chains.clear()


def test_a_root_stream_is_one_layer_without_a_query(fresh_chains):
    layers, queries = drive(forks.layers(meta(tail=7)), lambda q: pytest.fail("no query"))
    assert layers == [(1, 0, 7)]
    assert queries == []


def test_a_fork_reads_each_range_from_the_stream_that_stores_it(fresh_chains):
    # 3 forked from 2 at 6; 2 forked from 1 at 4.
    leaf = meta(id=3, tail=9, forked_from_id=2, fork_offset=6)
    chain_rows = [(3, 6), (2, 4), (1, None)]
    layers, queries = drive(forks.layers(leaf), lambda q: chain_rows)
    assert layers == [(1, 0, 4), (2, 4, 6), (3, 6, 9)]
    assert len(queries) == 1
    # The chain is cached: the next read asks nothing.
    again, queries = drive(forks.layers(leaf), lambda q: pytest.fail("cached"))
    assert again == layers and queries == []
    forks.forget(3)
    _, queries = drive(forks.layers(leaf), lambda q: chain_rows)
    assert len(queries) == 1


def test_a_fork_at_its_source_tail_with_no_own_data_skips_empty_layers(fresh_chains):
    leaf = meta(id=2, tail=4, forked_from_id=1, fork_offset=4)
    layers, _ = drive(forks.layers(leaf), lambda q: [(2, 4), (1, None)])
    assert layers == [(1, 0, 4)]


# --- reads: filling a chunk ------------------------------------------------------------------


class Segments:
    """Answers segment queries from appends kept in memory, cut as the SQL cuts them."""

    def __init__(self, json_mode: bool, **by_stream: list[tuple[int, bytes]]) -> None:
        self.json_mode = json_mode
        self.rows: dict[int, list] = {}
        for key, appends in by_stream.items():
            stream_id = int(key.removeprefix("s"))
            rows = []
            for start, body in appends:
                if json_mode:
                    p = parse_body("application/json", body, allow_empty_json=False)
                    rows.append((start, start + p.units, p.data, p.boundaries))
                else:
                    rows.append((start, start + len(body), body, None))
            self.rows[stream_id] = rows

    def __call__(self, query: Q):
        if isinstance(query.params, list):  # the fork chain query
            return self.chain
        p = query.params
        found = []
        for start, end, data, bounds in self.rows[p["id"]]:
            if end > p["pos"] and start < p["tail"]:
                if not self.json_mode:
                    data = data[max(p["pos"] - start, 0) :][: p["budget"]]
                found.append((start, end, data, bounds))
        return found

    chain: list = []


def test_a_byte_read_stops_at_the_budget_mid_append():
    store = Segments(False, s1=[(0, b"abcd"), (4, b"efgh")])
    (pieces, units), _ = drive(read_range(meta(tail=8), 2, 5), store)
    assert b"".join(pieces) == b"cdefg" and units == 5


def test_a_json_read_takes_whole_messages_within_the_budget():
    store = Segments(True, s1=[(0, b"[1,22,333]"), (3, b"[4444]")])
    m = meta(tail=4, content_type="application/json")
    (pieces, units), _ = drive(read_range(m, 0, 6), store)
    assert pieces == [b"1,22"] and units == 2
    (pieces, units), _ = drive(read_range(m, 1, 100), store)
    assert pieces == [b"22,333", b"4444"] and units == 3


def test_a_json_message_larger_than_the_budget_is_still_delivered_alone():
    store = Segments(True, s1=[(0, b'["' + b"x" * 50 + b'", 1]')])
    m = meta(tail=2, content_type="application/json")
    (pieces, units), _ = drive(read_range(m, 0, 10), store)
    assert units == 1 and pieces[0].startswith(b'"xxx')


def test_a_fork_read_stitches_its_layers_and_cuts_the_source_at_the_fork_point(fresh_chains):
    # The source's append "efgh" runs past the fork point 6: the fork sees only "ef".
    store = Segments(False, s1=[(0, b"abcd"), (4, b"efgh")], s2=[(6, b"XY")])
    store.chain = [(2, 6), (1, None)]
    fork = meta(id=2, tail=8, forked_from_id=1, fork_offset=6)
    (pieces, units), _ = drive(read_range(fork, 0, 100), store)
    assert b"".join(pieces) == b"abcdefXY" and units == 8


def test_json_slice_picks_messages_by_their_boundaries():
    p = parse_body("application/json", b'[1,{"a":2},"three"]', allow_empty_json=False)
    assert p.boundaries == [0, 2, 10]
    assert json_slice(p.data, p.boundaries, 0, 3, 100, True) == (b'1,{"a":2},"three"', 3)
    assert json_slice(p.data, p.boundaries, 1, 3, 100, True) == (b'{"a":2},"three"', 2)
    assert json_slice(p.data, p.boundaries, 1, 2, 100, True) == (b'{"a":2}', 1)
    assert json_slice(p.data, p.boundaries, 0, 3, 9, True) == (b'1,{"a":2}', 2)
    assert json_slice(p.data, p.boundaries, 1, 3, 3, False) == (b"", 0)
    assert json_slice(p.data, p.boundaries, 1, 3, 3, True) == (b'{"a":2}', 1)


def test_stream_meta_expiry_follows_the_deadline_rule():
    assert not meta().is_expired(NOW)
    ttl = meta(ttl_seconds=10, last_access_at=NOW - dt.timedelta(seconds=10))
    assert ttl.deadline() == NOW and ttl.is_expired(NOW)
    assert not meta(expires_at=NOW + dt.timedelta(seconds=1)).is_expired(NOW)
