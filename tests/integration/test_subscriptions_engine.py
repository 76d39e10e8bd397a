"""The subscription engine and the append trigger in PostgreSQL, without HTTP:
globs mean the same in the database, appends of any origin link and wake,
rolled-back appends do not, stream removal unlinks, and the Python worker
helper claims, reads, acks and is fenced like HTTP workers."""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction

from durable_streams import api, offsets
from durable_streams.subscriptions import config, engine, globs
from durable_streams.subscriptions.errors import SubscriptionError
from durable_streams.subscriptions.models import Subscription, SubscriptionLink
from durable_streams.subscriptions.worker import PullWorker

from ..support import unique

pytestmark = pytest.mark.django_db

ROOT = "http://testserver/v1/stream/"


def make(sub_id: str, **fields) -> None:
    body = config.parse_create(json.dumps(fields).encode())
    created, _ = engine.create_or_confirm(sub_id, body, ROOT)
    assert created


def links(sub_id: str) -> dict[str, tuple[bool, int]]:
    sub = Subscription.objects.get(name=sub_id, deleted_at__isnull=True)
    return {
        link.path: (link.explicit, link.acked)
        for link in SubscriptionLink.objects.filter(subscription=sub)
    }


@pytest.mark.parametrize(
    "pattern", ["ev/*", "ev/**", "**/log", "a/**/z", "x.y/*/(q)", "t/*/chat", "**"]
)
def test_glob_means_the_same_in_postgres_and_python(pattern):
    paths = [
        "ev",
        "ev/a",
        "ev/a/b",
        "log",
        "a/log",
        "a/z",
        "a/b/c/z",
        "x.y/1/(q)",
        "xzy/1/(q)",
        "t/42/chat",
        "t/42/chats",
        "a//z",
    ]
    regex = globs.to_regex(globs.validate(pattern))
    with connection.cursor() as cursor:
        for path in paths:
            cursor.execute("SELECT ('/' || %s) ~ %s", [path, regex])
            assert cursor.fetchone()[0] is globs.matches(pattern, path), (pattern, path)


def test_in_process_appends_link_discovered_streams_before_the_append():
    prefix, sub_id = unique("ev"), unique("sub")
    api.create_stream(f"{prefix}/old", content_type="application/json", data=[1, 2])
    make(sub_id, type="pull-wake", pattern=f"{prefix}/*", wake_stream="nowhere")
    assert links(sub_id) == {f"{prefix}/old": (False, 2)}
    api.create_stream(f"{prefix}/new", content_type="application/json")
    assert f"{prefix}/new" not in links(sub_id)  # created empty: nothing to wake for yet
    api.append(f"{prefix}/new", [1, 2, 3])
    assert links(sub_id)[f"{prefix}/new"] == (False, 0)
    api.append(f"{prefix}/new", 4)
    assert links(sub_id)[f"{prefix}/new"] == (False, 0)  # linked once, cursor untouched


def test_a_rolled_back_append_links_nothing():
    prefix, sub_id = unique("ev"), unique("sub")
    make(sub_id, type="pull-wake", pattern=f"{prefix}/*", wake_stream="nowhere")
    api.create_stream(f"{prefix}/a", content_type="application/json")
    with pytest.raises(RuntimeError), transaction.atomic():
        api.append(f"{prefix}/a", [1])
        assert f"{prefix}/a" in links(sub_id)
        raise RuntimeError("roll back")
    assert f"{prefix}/a" not in links(sub_id)


def test_deleting_a_stream_drops_glob_links_and_rewinds_explicit_ones():
    prefix, sub_id = unique("ev"), unique("sub")
    make(
        sub_id,
        type="pull-wake",
        pattern=f"{prefix}/*",
        streams=[f"{prefix}/x"],
        wake_stream="nowhere",
    )
    api.create_stream(f"{prefix}/g", content_type="application/json", data=[1])
    api.create_stream(f"{prefix}/x", content_type="application/json", data=[1, 2])
    SubscriptionLink.objects.filter(path=f"{prefix}/x").update(acked=2)
    api.delete(f"{prefix}/g")
    api.delete(f"{prefix}/x")
    assert links(sub_id) == {f"{prefix}/x": (True, 0)}


def test_python_worker_claims_reads_acks_and_is_fenced():
    prefix, sub_id, wake = unique("ev"), unique("sub"), unique("wake")
    api.create_stream(wake, content_type="application/json")
    make(sub_id, type="pull-wake", pattern=f"{prefix}/*", wake_stream=wake)
    api.create_stream(f"{prefix}/a", content_type="application/json", data=[{"n": 1}, {"n": 2}])
    assert engine.evaluate(Subscription.objects.get(name=sub_id).pk)
    events, _ = api.read_json(wake)
    assert [(e["subscription_id"], e["generation"]) for e in events] == [(sub_id, 1)]

    claim = PullWorker(sub_id, name="py").claim()
    assert claim is not None and claim.generation == 1
    assert PullWorker(sub_id, name="other").claim() is None  # ALREADY_CLAIMED
    (stream,) = claim.pending()
    messages, next_offset = claim.read_json(stream)
    assert messages == [{"n": 1}, {"n": 2}]
    assert next_offset == offsets.encode(2)
    claim.heartbeat()
    api.append(f"{prefix}/a", {"n": 3})
    assert claim.done({stream.path: next_offset}) is True  # n=3 arrived meanwhile
    assert links(sub_id)[f"{prefix}/a"] == (False, 2)
    with pytest.raises(SubscriptionError) as info:
        claim.release()
    assert info.value.code == "FENCED"
    events, _ = api.read_json(wake)
    assert [e["generation"] for e in events] == [1, 2]
