"""Forks (spec 4.2) through the in-process API, against real Postgres."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from durable_streams import api, offsets, storage
from durable_streams.exceptions import BadRequest, Conflict, Gone, NotFound
from durable_streams.models import ProducerState, Segment, Stream
from durable_streams.producers import Producer
from durable_streams.storage import StreamMeta

pytestmark = pytest.mark.django_db


def name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fork(path: str, source: str, offset: int | None = None, sub: int = 0, **kwargs):
    _created, meta = storage.create_stream(
        path,
        content_type=kwargs.pop("content_type", None),
        fork=storage.ForkSpec(source, offset, sub),
        **kwargs,
    )
    return meta


def read_all(path: str, offset: str = "-1", max_bytes: int | None = None) -> bytes:
    out = b""
    for _ in range(100_000):
        result = api.read(path, offset, max_bytes=max_bytes)
        out += result.body
        offset = result.next_offset
        if result.up_to_date:
            return out
    raise AssertionError("read did not reach the tail")


def test_fork_reads_source_data_up_to_the_fork_point_then_its_own():
    src = name()
    api.create_stream(src, content_type="text/plain", data="hello ")
    mid = api.head(src).tail
    api.append(src, "world")
    f = fork(name("f"), src, offset=mid)
    api.append(f.path, "fork")
    assert read_all(f.path) == b"hello fork"
    assert read_all(src) == b"hello world"


def test_fork_shares_the_source_offsets_below_the_fork_point():
    src = name()
    api.create_stream(src, content_type="text/plain", data="abc")
    f = fork(name("f"), src)
    source_read = api.read(src)
    fork_read = api.read(f.path)
    assert source_read.next_offset == fork_read.next_offset == offsets.encode(3)


def test_json_read_across_the_fork_boundary_is_one_array():
    src = name()
    api.create_stream(src, content_type="application/json", data=[{"from": "source"}])
    f = fork(name("f"), src)
    api.append(f.path, {"from": "fork"})
    assert read_all(f.path) == b'[{"from":"source"},{"from":"fork"}]'


def test_appends_to_the_source_after_the_fork_never_reach_the_fork():
    src = name()
    api.create_stream(src, content_type="text/plain", data="A")
    f = fork(name("f"), src)
    api.append(src, "B")
    api.append(f.path, "X")
    assert read_all(f.path) == b"AX"
    assert read_all(src) == b"AB"


def test_sub_offset_splits_an_append_and_composes_through_a_chain():
    root = name()
    api.create_stream(root, content_type="text/plain", data="abcdef")
    level1 = fork(name("f"), root, offset=0, sub=4)
    assert read_all(level1.path) == b"abcd"
    level2 = fork(name("f"), level1.path, offset=0, sub=2)
    api.append(level2.path, "Z")
    assert read_all(level2.path) == b"abZ"
    with pytest.raises(BadRequest):
        fork(name("f"), level1.path, offset=0, sub=5)  # past the inherited slice


def test_json_sub_offset_counts_messages_of_a_batch():
    src = name()
    api.create_stream(src, content_type="application/json", data=[1, 2, 3, 4])
    f = fork(name("f"), src, offset=0, sub=2)
    assert read_all(f.path) == b"[1,2]"
    with pytest.raises(BadRequest):
        fork(name("f"), src, offset=0, sub=5)


def test_fork_of_missing_source_is_not_found_and_type_mismatch_conflicts():
    with pytest.raises(NotFound):
        fork(name("f"), name("missing"))
    src = name()
    api.create_stream(src, content_type="text/plain")
    with pytest.raises(Conflict):
        fork(name("f"), src, content_type="application/json")
    with pytest.raises(BadRequest):
        fork(name("f"), src, offset=10)


def test_fork_does_not_inherit_producer_state():
    src = name()
    api.create_stream(src, content_type="text/plain")
    api.append(src, "x", producer=Producer("p", 0, 0))
    f = fork(name("f"), src)
    result = api.append(f.path, "y", producer=Producer("p", 0, 0))
    assert not result.duplicate
    assert read_all(f.path) == b"xy"


def test_twenty_five_level_fork_chain_reads_every_level_correctly():
    root = name("root")
    api.create_stream(root, content_type="text/plain", data="L0;")
    paths = [root]
    for level in range(1, 26):
        meta = fork(name(f"l{level}"), paths[-1])
        api.append(meta.path, f"L{level};")
        paths.append(meta.path)
    for level, path in enumerate(paths):
        assert read_all(path) == "".join(f"L{i};" for i in range(level + 1)).encode()
    # Small chunks: every layer boundary is crossed by a separate read.
    assert read_all(paths[-1], max_bytes=2) == "".join(f"L{i};" for i in range(26)).encode()


def _fork_of_bulk_loaded_source(source_appends: int) -> StreamMeta:
    """A fork (with 8 bytes of its own) of a source of ``source_appends`` 100-byte appends."""
    src = name()
    api.create_stream(src, content_type="application/octet-stream")
    with connection.cursor() as cursor:
        # Bulk-load the source's history directly: the test is about reads.
        meta = api.head(src)
        cursor.execute(
            'INSERT INTO durable_streams_segment (stream_id, start, "end", data)'
            " SELECT %s, g * 100, g * 100 + 100, decode(repeat('ab', 100), 'hex')"
            " FROM generate_series(0, %s - 1) g",
            [meta.id, source_appends],
        )
        cursor.execute(
            "UPDATE durable_streams_stream SET tail = %s WHERE id = %s",
            [source_appends * 100, meta.id],
        )
    f = fork(name("f"), src)
    api.append(f.path, b"own data")
    return f


def _cost_of_read(path: str, position: int, max_bytes: int | None) -> tuple[int, int, bytes]:
    """(queries, rows they returned, body) of one read of ``path`` from ``position``."""
    storage.read(path, position, max_bytes=max_bytes)  # warm the chain cache
    queries, rows = 0, 0

    def count(execute, sql, params, many, context):
        nonlocal queries, rows
        result = execute(sql, params, many, context)
        queries += 1
        rows += max(context["cursor"].rowcount, 0)
        return result

    with connection.execute_wrapper(count):
        result = storage.read(path, position, max_bytes=max_bytes)
    return queries, rows, result.body


def _fork_read_costs(source_appends: int) -> dict[str, tuple[int, int, bytes]]:
    f = _fork_of_bulk_loaded_source(source_appends)
    inherited = source_appends * 100
    return {
        "first inherited bytes": _cost_of_read(f.path, 0, 250),
        "middle of the inherited data": _cost_of_read(f.path, inherited // 2 + 30, 250),
        "across the fork point": _cost_of_read(f.path, inherited - 50, None),
        "the fork's own data": _cost_of_read(f.path, inherited, None),
    }


def test_reading_a_fork_costs_the_same_whatever_the_size_of_inherited_data():
    small = _fork_read_costs(10)
    large = _fork_read_costs(20_000)
    expected = {
        "first inherited bytes": b"\xab" * 250,
        "middle of the inherited data": b"\xab" * 250,
        "across the fork point": b"\xab" * 50 + b"own data",
        "the fork's own data": b"own data",
    }
    for read, body in expected.items():
        assert small[read][2] == large[read][2] == body, read
        # As many queries, returning as many rows, over 1 kB or 2 MB of inherited data.
        assert small[read][:2] == large[read][:2], (read, small[read][:2], large[read][:2])


def test_forking_a_large_stream_stores_no_bytes():
    src = name()
    api.create_stream(src, content_type="application/octet-stream", data=b"x" * 4_000_000)
    before = Segment.objects.count()
    f = fork(name("f"), src)
    assert Segment.objects.count() == before
    assert not Segment.objects.filter(stream_id=f.id).exists()
    assert read_all(f.path) == b"x" * 4_000_000


def test_deleting_a_source_with_forks_soft_deletes_it_and_keeps_data_for_forks():
    src = name()
    api.create_stream(src, content_type="text/plain", data="kept")
    f = fork(name("f"), src)
    api.delete(src)
    with pytest.raises(Gone):
        api.head(src)
    with pytest.raises(Gone):
        api.append(src, "more")
    with pytest.raises(Gone):
        api.delete(src)
    with pytest.raises(Conflict):
        api.create_stream(src, content_type="text/plain")
    with pytest.raises(Conflict):
        fork(name("f"), src)
    assert read_all(f.path) == b"kept"


def test_deleting_the_last_fork_collects_the_whole_soft_deleted_chain():
    root = name("root")
    api.create_stream(root, content_type="text/plain", data="A")
    api.append(root, "x", producer=Producer("p", 0, 0))
    middle = fork(name("mid"), root)
    api.append(middle.path, "B", producer=Producer("p", 0, 0))
    leaf = fork(name("leaf"), middle.path)
    api.append(leaf.path, "C")
    ids = [api.head(root).id, middle.id, leaf.id]
    api.delete(root)
    api.delete(middle.path)
    assert Stream.objects.filter(id__in=ids).count() == 3
    api.delete(leaf.path)
    assert not Stream.objects.filter(id__in=ids).exists()
    assert not Segment.objects.filter(stream_id__in=ids).exists()
    assert not ProducerState.objects.filter(stream_id__in=ids).exists()
    with pytest.raises(NotFound):
        api.head(root)


def test_deleting_all_forks_leaves_a_live_source_intact():
    src = name()
    api.create_stream(src, content_type="text/plain", data="A")
    forks = [fork(name("f"), src) for _ in range(3)]
    for f in forks:
        api.delete(f.path)
    assert read_all(src) == b"A"
    assert not Stream.objects.filter(forked_from_id=api.head(src).id).exists()


def test_fork_inherits_the_source_ttl_unless_it_sets_its_own():
    src = name()
    api.create_stream(src, content_type="text/plain", ttl_seconds=3600)
    assert fork(name("f"), src).ttl_seconds == 3600
    assert fork(name("f"), src, ttl_seconds=99999).ttl_seconds == 99999


def test_idempotent_fork_creation_matches_on_source_and_fork_point():
    src = name()
    api.create_stream(src, content_type="text/plain", data="abc")
    path = name("f")
    first = storage.create_stream(path, content_type=None, fork=storage.ForkSpec(src, None, 0))
    again = storage.create_stream(path, content_type=None, fork=storage.ForkSpec(src, None, 0))
    assert first[0] is True and again[0] is False
    with pytest.raises(Conflict):
        storage.create_stream(path, content_type=None, fork=storage.ForkSpec(src, 0, 1))
