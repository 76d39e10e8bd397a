"""Expiry (sliding TTL, absolute Expires-At) and deletion (5.4): no stream
outlives its deadline, and nothing of a removed stream stays behind."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from durable_streams import api, storage
from durable_streams.exceptions import NotFound
from durable_streams.models import ProducerState, Segment, Stream
from durable_streams.producers import Producer

from ..support import read_bytes, unique

pytestmark = pytest.mark.django_db


def age(path: str, seconds: float) -> None:
    """Pretend the stream was last touched ``seconds`` ago."""
    Stream.objects.filter(path=path).update(
        last_access_at=timezone.now() - dt.timedelta(seconds=seconds)
    )


def last_access(path: str) -> dt.datetime:
    return Stream.objects.get(path=path).last_access_at


def rows_of(stream_id: int) -> tuple[int, int, int]:
    return (
        Stream.objects.filter(id=stream_id).count(),
        Segment.objects.filter(stream_id=stream_id).count(),
        ProducerState.objects.filter(stream_id=stream_id).count(),
    )


def stream_with_everything(**kwargs) -> tuple[str, int]:
    """A stream with several segments and producer state."""
    path = unique()
    meta = api.create_stream(path, content_type="text/plain", data="init", **kwargs)
    api.append(path, "a", producer=Producer("p", 0, 0))
    api.append(path, "b", producer=Producer("q", 0, 0))
    api.append(path, "c")
    assert rows_of(meta.id) == (1, 4, 2)
    return path, meta.id


# --- sliding TTL -----------------------------------------------------------------------------


def test_stream_within_its_ttl_is_alive():
    path = unique()
    api.create_stream(path, content_type="text/plain", ttl_seconds=60, data="x")
    age(path, 50)
    assert api.head(path).ttl_seconds == 60
    assert read_bytes(path) == b"x"


def test_reads_slide_the_ttl_window():
    path = unique()
    api.create_stream(path, content_type="text/plain", ttl_seconds=60)
    age(path, 50)
    before = timezone.now()
    api.read(path)
    assert last_access(path) >= before
    age(path, 50)
    api.read(path)  # alive: the previous read moved the deadline
    assert last_access(path) >= before


def test_appends_slide_the_ttl_window():
    path = unique()
    api.create_stream(path, content_type="text/plain", ttl_seconds=60)
    age(path, 50)
    before = timezone.now()
    api.append(path, "x")
    assert last_access(path) >= before


def test_head_does_not_slide_the_ttl_window():
    path = unique()
    api.create_stream(path, content_type="text/plain", ttl_seconds=60)
    age(path, 50)
    touched = last_access(path)
    api.head(path)
    storage.get_stream(path)
    assert last_access(path) == touched


def test_stream_past_its_ttl_is_not_found_for_every_operation():
    path = unique()
    api.create_stream(path, content_type="text/plain", ttl_seconds=60, data="x")
    age(path, 61)
    assert storage.get_stream(path) is None
    with pytest.raises(NotFound):
        api.head(path)
    with pytest.raises(NotFound):
        api.read(path)
    with pytest.raises(NotFound):
        api.append(path, "y", content_type="text/plain")
    with pytest.raises(NotFound):
        api.close(path)
    with pytest.raises(NotFound):
        api.delete(path)


def test_expired_stream_can_be_recreated_empty_with_nothing_left_of_the_old_one():
    path, old_id = stream_with_everything(ttl_seconds=60)
    age(path, 61)
    meta = api.create_stream(path, content_type="application/json")  # other config: fine now
    assert meta.id != old_id
    assert meta.tail == 0
    assert rows_of(old_id) == (0, 0, 0)
    assert api.read(path).body == b"[]"
    # Producer state started over too.
    assert not api.append(path, 1, producer=Producer("p", 0, 0)).duplicate


def test_a_write_to_an_expired_stream_removes_its_rows():
    path, old_id = stream_with_everything(ttl_seconds=60)
    age(path, 61)
    with pytest.raises(NotFound):
        api.append(path, "late", content_type="text/plain")
    assert rows_of(old_id) == (0, 0, 0)


# --- absolute expiry --------------------------------------------------------------------------


def test_stream_before_its_expires_at_is_alive_and_reads_do_not_extend_it():
    path = unique()
    deadline = timezone.now() + dt.timedelta(hours=1)
    api.create_stream(path, content_type="text/plain", expires_at=deadline, data="x")
    api.read(path)
    assert api.head(path).expires_at == deadline


def test_stream_past_its_expires_at_is_not_found_and_can_be_recreated():
    path = unique()
    deadline = timezone.now() + dt.timedelta(hours=1)
    meta = api.create_stream(path, content_type="text/plain", expires_at=deadline, data="x")
    Stream.objects.filter(id=meta.id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(NotFound):
        api.read(path)
    assert api.create_stream(path, content_type="text/plain").id != meta.id
    assert rows_of(meta.id) == (0, 0, 0)


# --- delete -----------------------------------------------------------------------------------


def test_delete_removes_the_stream_and_all_its_rows():
    path, stream_id = stream_with_everything()
    api.delete(path)
    assert rows_of(stream_id) == (0, 0, 0)
    with pytest.raises(NotFound):
        api.head(path)
    with pytest.raises(NotFound):
        api.read(path)
    with pytest.raises(NotFound):
        api.append(path, "x", content_type="text/plain")


def test_deleting_twice_is_not_found():
    path, _ = stream_with_everything()
    api.delete(path)
    with pytest.raises(NotFound):
        api.delete(path)


def test_delete_of_a_missing_stream_is_not_found():
    with pytest.raises(NotFound):
        api.delete(unique())


def test_delete_leaves_other_streams_untouched():
    doomed, doomed_id = stream_with_everything()
    kept, kept_id = stream_with_everything()
    api.delete(doomed)
    assert rows_of(kept_id) == (1, 4, 2)
    assert read_bytes(kept) == b"initabc"
    assert rows_of(doomed_id) == (0, 0, 0)


def test_a_path_recreated_after_delete_starts_from_scratch():
    path, old_id = stream_with_everything()
    api.delete(path)
    meta = api.create_stream(path, content_type="text/plain")
    assert meta.id != old_id and meta.tail == 0
    assert read_bytes(path) == b""
    assert not api.append(path, "x", producer=Producer("p", 0, 0)).duplicate


def test_delete_of_a_closed_json_stream_with_many_segments_leaves_no_rows():
    path = unique()
    meta = api.create_stream(path, content_type="application/json")
    for i in range(50):
        api.append(path, [i, i])
    api.close(path)
    api.delete(path)
    assert rows_of(meta.id) == (0, 0, 0)


def test_no_orphan_rows_exist_after_a_mix_of_operations():
    for _ in range(3):
        path, _ = stream_with_everything(ttl_seconds=60)
        api.delete(path)
        path, _ = stream_with_everything(ttl_seconds=60)
        age(path, 61)
        api.create_stream(path, content_type="text/plain")
    stream_ids = set(Stream.objects.values_list("id", flat=True))
    assert set(Segment.objects.values_list("stream_id", flat=True)) <= stream_ids
    assert set(ProducerState.objects.values_list("stream_id", flat=True)) <= stream_ids
