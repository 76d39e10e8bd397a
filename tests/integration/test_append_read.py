"""Appending and reading (spec 5.2, 5.6, 8, 9) through storage and the API."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import override_settings

from durable_streams import api, content, offsets, storage
from durable_streams.exceptions import BadRequest, Conflict, NotFound
from durable_streams.models import Segment

from ..support import read_bytes, read_stream, unique

pytestmark = pytest.mark.django_db


def chunk_size(size: int):
    return override_settings(DURABLE_STREAMS={**settings.DURABLE_STREAMS, "MAX_CHUNK_SIZE": size})


def raw(data: bytes, content_type: str = "application/octet-stream") -> dict:
    return {"content_type": content_type, "payload": content.Payload.raw(data)}


def binary_stream(*appends: bytes) -> str:
    path = unique()
    api.create_stream(path, content_type="application/octet-stream")
    for data in appends:
        storage.append(path, **raw(data))
    return path


def json_stream(*appends) -> str:
    path = unique()
    api.create_stream(path, content_type="application/json")
    for data in appends:
        api.append(path, data)
    return path


def messages(chunk) -> list:
    return json.loads(chunk.body)


# --- round trips --------------------------------------------------------------------


def test_binary_round_trip_preserves_every_byte_value():
    data = bytes(range(256)) * 3
    path = binary_stream(data[:100], data[100:101], data[101:])
    assert read_bytes(path) == data


def test_each_append_returns_the_new_tail_counted_in_bytes():
    path = unique()
    api.create_stream(path, content_type="application/octet-stream")
    ends = [storage.append(path, **raw(b"x" * n)).next_position for n in (3, 1, 10)]
    assert ends == [3, 4, 14]
    assert api.head(path).tail_offset == offsets.encode(14)


def test_offsets_returned_by_appends_are_strictly_increasing_tokens():
    path = unique()
    api.create_stream(path, content_type="text/plain")
    tokens = [api.append(path, "a" * (i % 3 + 1)).next_offset for i in range(30)]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == len(tokens)


def test_text_appends_are_stored_as_utf8():
    path = unique()
    api.create_stream(path, content_type="text/plain; charset=utf-8")
    api.append(path, "snow ☃ ")
    api.append(path, b"and bytes")
    assert read_bytes(path) == "snow ☃ and bytes".encode()


def test_json_values_round_trip_as_one_array_of_messages():
    path = json_stream({"a": 1}, [{"b": 2}, {"c": 3}], False, 7, [[1, 2]])
    assert api.read_json(path)[0] == [{"a": 1}, {"b": 2}, {"c": 3}, False, 7, [1, 2]]


def test_json_api_takes_str_and_bytes_as_json_source_text():
    path = json_stream('"a string"', b'[{"x": 1}, 2]')
    assert api.read_json(path)[0] == ["a string", {"x": 1}, 2]
    with pytest.raises(BadRequest):
        api.append(path, "not json")


def test_json_offsets_count_messages_not_bytes():
    path = unique()
    api.create_stream(path, content_type="application/json")
    assert api.append(path, {"long": "x" * 100}).next_position == 1
    assert api.append(path, [1, 2, 3]).next_position == 4
    assert api.head(path).tail == 4


def test_json_messages_keep_their_original_text():
    path = unique()
    api.create_stream(path, content_type="application/json")
    api.append(path, b'[1.0, 1e2, {"b": 1,  "a" : 2}, "\\u00e9"]')
    assert storage.read(path, 0).body == b'[1.0,1e2,{"b": 1,  "a" : 2},"\\u00e9"]'


def test_invalid_json_append_is_rejected_and_writes_nothing():
    path = json_stream({"ok": True})
    for body in (b"{", b"[]", b"NaN", b"[1,]"):
        with pytest.raises(BadRequest):
            api.append(path, body)
    assert api.read_json(path)[0] == [{"ok": True}]


def test_an_empty_append_is_a_bad_request():
    path = binary_stream()
    with pytest.raises(BadRequest):
        api.append(path, b"")
    with pytest.raises(BadRequest):
        storage.append(path, content_type="application/octet-stream")


def test_append_with_a_body_needs_a_content_type():
    path = binary_stream()
    with pytest.raises(BadRequest):
        storage.append(path, payload=content.Payload.raw(b"x"))


def test_append_with_a_different_content_type_conflicts_and_writes_nothing():
    path = binary_stream(b"abc")
    with pytest.raises(Conflict) as info:
        storage.append(path, **raw(b"x", "text/plain"))
    assert "Stream-Closed" not in info.value.headers
    assert read_bytes(path) == b"abc"


def test_append_to_a_missing_stream_is_not_found():
    with pytest.raises(NotFound):
        storage.append(unique(), **raw(b"x"))


def test_api_append_rejects_python_objects_for_non_json_streams():
    path = binary_stream()
    with pytest.raises(TypeError):
        api.append(path, {"a": 1})


# --- reading from offsets -------------------------------------------------------------------


def test_read_from_the_middle_of_an_append_returns_the_exact_suffix():
    path = binary_stream(b"0123456789", b"abcdef")
    assert storage.read(path, 4).body == b"456789abcdef"
    assert storage.read(path, 12).body == b"cdef"
    assert storage.read(path, 10).body == b"abcdef"


def test_json_read_from_inside_a_batch_starts_at_that_message():
    path = json_stream([1, 2, 3], [4, 5])
    assert messages(storage.read(path, 1)) == [2, 3, 4, 5]
    assert messages(storage.read(path, 3)) == [4, 5]
    assert messages(storage.read(path, 4)) == [5]


def test_read_at_the_tail_is_empty_and_up_to_date():
    path = binary_stream(b"abc")
    result = storage.read(path, 3)
    assert (result.body, result.units, result.up_to_date, result.closed) == (b"", 0, True, False)
    assert result.next_offset == offsets.encode(3)


def test_json_read_at_the_tail_is_an_empty_array():
    path = json_stream([1, 2])
    assert storage.read(path, 2).body == b"[]"


def test_read_past_the_tail_is_a_bad_request():
    path = binary_stream(b"abc")
    with pytest.raises(BadRequest):
        storage.read(path, 4)
    with pytest.raises(BadRequest):
        api.read(path, offsets.encode(10**20))


def test_read_of_a_missing_stream_is_not_found():
    with pytest.raises(NotFound):
        storage.read(unique(), 0)


def test_offset_now_reads_nothing_and_points_at_the_tail():
    path = binary_stream(b"history")
    result = api.read(path, offsets.NOW)
    assert (result.body, result.start, result.next_position, result.up_to_date) == (b"", 7, 7, True)


def test_offset_now_on_a_json_stream_is_an_empty_array():
    path = json_stream([1, 2, 3])
    result = api.read(path, offsets.NOW)
    assert (result.body, result.next_position) == (b"[]", 3)


def test_offset_minus_one_reads_from_the_beginning():
    path = binary_stream(b"abc")
    assert api.read(path, offsets.BEGINNING).body == b"abc"


def test_malformed_offset_tokens_are_rejected_by_the_api():
    path = binary_stream(b"abc")
    for token in ("3", "abc", "0_3", ""):
        with pytest.raises(ValueError):
            api.read(path, token)


def test_eof_is_reported_only_by_the_read_that_reaches_the_tail_of_a_closed_stream():
    path = binary_stream(b"0123456789")
    api.close(path)
    partial = storage.read(path, 0, max_bytes=4)
    assert not partial.closed and not partial.up_to_date
    final = storage.read(path, 4)
    assert final.closed and final.body == b"456789"
    assert storage.read(path, 10).closed


# --- chunking at MAX_CHUNK_SIZE ---------------------------------------------------------------


def test_binary_reads_split_exactly_at_max_chunk_size_across_appends():
    data = bytes(range(25))
    path = binary_stream(data[:7], data[7:18], data[18:])
    with chunk_size(10):
        chunks = read_stream(path)
    assert [c.body for c in chunks] == [data[:10], data[10:20], data[20:]]
    assert [c.start for c in chunks] == [0, 10, 20]
    assert [c.up_to_date for c in chunks] == [False, False, True]


def test_binary_chunking_from_an_unaligned_offset():
    data = bytes(range(40))
    path = binary_stream(data[:15], data[15:])
    with chunk_size(10):
        chunks = read_stream(path, offsets.encode(3))
    assert [c.body for c in chunks] == [data[3:13], data[13:23], data[23:33], data[33:]]


def test_binary_chunking_over_many_tiny_appends():
    path = binary_stream(*[bytes([i]) for i in range(30)])
    with chunk_size(10):
        chunks = read_stream(path)
    assert [len(c.body) for c in chunks] == [10, 10, 10]
    assert b"".join(c.body for c in chunks) == bytes(range(30))


def test_binary_chunk_of_a_single_huge_append_is_cut_at_the_limit():
    data = bytes(range(256)) * 40  # 10240 bytes in one segment
    path = binary_stream(data)
    with chunk_size(4096):
        chunks = read_stream(path)
    assert [len(c.body) for c in chunks] == [4096, 4096, 2048]
    assert b"".join(c.body for c in chunks) == data


def test_max_bytes_argument_overrides_the_chunk_size():
    path = binary_stream(b"abcdefghij")
    assert storage.read(path, 0, max_bytes=3).body == b"abc"


def test_json_reads_split_at_message_boundaries_within_the_chunk_size():
    values = [{"i": i, "pad": "x" * (i % 7)} for i in range(40)]
    path = json_stream(values[:5], *values[5:20], values[20:])
    budget = 40
    with chunk_size(budget):
        chunks = read_stream(path)
    got = []
    for chunk in chunks:
        batch = messages(chunk)  # every chunk is a whole JSON array
        assert len(batch) == chunk.units >= 1
        if len(batch) > 1:
            assert sum(len(json.dumps(m, separators=(",", ":"))) for m in batch) <= budget
        got.extend(batch)
    assert got == values
    assert len(chunks) > 5
    assert [c.up_to_date for c in chunks].count(True) == 1


def test_json_message_larger_than_the_chunk_size_is_still_delivered_alone():
    big = {"blob": "y" * 500}
    path = json_stream(1, big, [2, 3])
    with chunk_size(50):
        chunks = read_stream(path)
    assert [messages(c) for c in chunks] == [[1], [big], [2, 3]]


def test_json_chunk_offsets_continue_exactly_where_the_previous_chunk_ended():
    path = json_stream(list(range(100)))
    with chunk_size(30):
        chunks = read_stream(path)
    position = 0
    for chunk in chunks:
        assert chunk.start == position
        position = chunk.next_position
        assert messages(chunk) == list(range(chunk.start, chunk.next_position))
    assert position == 100


def test_each_append_is_stored_as_one_segment_row():
    path = binary_stream(b"a", b"bb", b"ccc")
    meta = api.head(path)
    rows = list(
        Segment.objects.filter(stream_id=meta.id).order_by("end").values_list("start", "end")
    )
    assert rows == [(0, 1), (1, 3), (3, 6)]


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/json"])
def test_a_chunked_read_fetches_only_the_appends_its_chunk_needs(content_type):
    """A read stops fetching rows once its chunk is full: reading 3 of 40
    appends must not ship the other 37 (and their bytes) from Postgres."""
    from django.db import connection

    path = unique("fetch")
    api.create_stream(path, content_type=content_type)
    for index in range(40):
        data = b"x" * 1000 if content_type != "application/json" else {"i": index, "pad": "y" * 990}
        api.append(path, data)
    fetched: list[int] = []

    def count_rows(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "durable_streams_segment" in sql and sql.lstrip().startswith("SELECT"):
            fetched.append(context["cursor"].rowcount)
        return result

    with connection.execute_wrapper(count_rows):
        result = storage.read(path, 0, max_bytes=2500)
    assert 1 <= result.units
    assert fetched and max(fetched) <= 3, fetched
