"""Creating streams (spec 5.1) through storage, against real Postgres."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from durable_streams import api, content, offsets, storage
from durable_streams.exceptions import Conflict
from durable_streams.models import Segment, Stream

from ..support import read_bytes, unique

pytestmark = pytest.mark.django_db

LATER = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)


def create(path, content_type="text/plain", **kwargs):
    return storage.create_stream(path, content_type=content_type, **kwargs)


def test_create_makes_an_empty_open_stream():
    created, meta = create(unique())
    assert created is True
    assert (meta.tail, meta.closed, meta.content_type) == (0, False, "text/plain")
    assert meta.tail_offset == offsets.encode(0)


def test_create_without_content_type_defaults_to_octet_stream():
    _, meta = storage.create_stream(unique(), content_type=None)
    assert meta.content_type == "application/octet-stream"


def test_repeating_an_identical_create_confirms_the_existing_stream():
    path = unique()
    _, first = create(path, ttl_seconds=600)
    created, again = create(path, ttl_seconds=600)
    assert created is False
    assert again.id == first.id
    assert Stream.objects.filter(path=path).count() == 1


def test_identical_create_compares_media_types_not_parameters_or_case():
    path = unique()
    create(path, content_type="text/plain")
    created, meta = create(path, content_type="TEXT/Plain; charset=utf-8")
    assert created is False
    assert meta.content_type == "text/plain"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"content_type": "text/plain"}, {"content_type": "application/json"}),
        ({}, {"ttl_seconds": 60}),
        ({"ttl_seconds": 60}, {}),
        ({"ttl_seconds": 60}, {"ttl_seconds": 61}),
        ({}, {"expires_at": LATER}),
        ({"expires_at": LATER}, {"expires_at": LATER + dt.timedelta(seconds=1)}),
        ({"ttl_seconds": 60}, {"expires_at": LATER}),
    ],
)
def test_create_with_a_different_configuration_conflicts(first, second):
    path = unique()
    create(path, **first)
    with pytest.raises(Conflict) as info:
        create(path, **second)
    assert info.value.status == 409


def test_create_expires_at_matches_the_same_instant_in_any_timezone():
    path = unique()
    create(path, expires_at=LATER)
    created, _ = create(path, expires_at=LATER.astimezone(dt.timezone(dt.timedelta(hours=-5))))
    assert created is False


def test_closure_status_must_match_for_an_idempotent_create():
    open_path, closed_path = unique(), unique()
    create(open_path)
    create(closed_path, closed=True)
    with pytest.raises(Conflict):
        create(open_path, closed=True)  # PUT + Stream-Closed to an open stream
    with pytest.raises(Conflict):
        create(closed_path)  # PUT without Stream-Closed to a closed stream
    assert create(closed_path, closed=True)[0] is False
    assert create(open_path)[0] is False


def test_a_stream_closed_after_creation_no_longer_matches_an_open_create():
    path = unique()
    create(path)
    api.close(path)
    with pytest.raises(Conflict):
        create(path)
    assert create(path, closed=True)[0] is False


def test_create_with_an_initial_body_stores_it_as_the_first_data():
    path = unique()
    _, meta = create(
        path, content_type="application/octet-stream", payload=content.Payload.raw(b"\x00\x01\x02")
    )
    assert meta.tail == 3
    assert read_bytes(path) == b"\x00\x01\x02"


def test_create_closed_with_a_body_makes_a_complete_single_shot_stream():
    path = unique()
    _, meta = create(path, closed=True, payload=content.Payload.raw(b"final"))
    assert (meta.tail, meta.closed) == (5, True)
    result = storage.read(path, 0)
    assert result.body == b"final"
    assert result.closed


def test_json_create_with_an_empty_array_makes_an_empty_stream_without_segments():
    path = unique()
    payload = content.parse_json(b"[]", allow_empty=True)
    _, meta = create(path, content_type="application/json", payload=payload)
    assert meta.tail == 0
    assert not Segment.objects.filter(stream_id=meta.id).exists()
    assert storage.read(path, 0).body == b"[]"


def test_json_create_with_a_batch_counts_messages():
    path = unique()
    payload = content.parse_json(b'[{"a":1},{"b":2}]', allow_empty=True)
    _, meta = create(path, content_type="application/json", payload=payload)
    assert meta.tail == 2
    assert storage.read(path, 0).body == b'[{"a":1},{"b":2}]'


def test_repeated_create_with_a_body_does_not_append_it_again():
    path = unique()
    create(path, payload=content.Payload.raw(b"once"))
    created, meta = create(path, payload=content.Payload.raw(b"once"))
    assert created is False
    assert meta.tail == 4
    assert read_bytes(path) == b"once"


def test_a_conflicting_create_writes_nothing():
    path = unique()
    create(path, content_type="text/plain")
    with pytest.raises(Conflict):
        create(path, content_type="application/octet-stream", payload=content.Payload.raw(b"x"))
    assert api.head(path).tail == 0
    assert read_bytes(path) == b""


def test_create_records_creation_and_access_times():
    before = timezone.now()
    _, meta = create(unique(), ttl_seconds=30)
    after = timezone.now()
    assert before <= meta.created_at <= after
    assert meta.last_access_at == meta.created_at
    assert meta.ttl_seconds == 30
    assert meta.expires_at is None
