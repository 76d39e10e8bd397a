"""The JSON metadata API (DRF): listing, cursor pagination, filters, detail,
access, and its OpenAPI schema."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from durable_streams import api, offsets, storage
from durable_streams.producers import Producer

pytestmark = pytest.mark.django_db

BASE = "/api/durable-streams/"


@pytest.fixture
def client(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def listing(client: APIClient, **params) -> dict:
    response = client.get(BASE + "streams/", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_detail_describes_a_stream_with_producers_and_forks(client):
    src, child = f"api/{uuid.uuid4().hex}", f"api/{uuid.uuid4().hex}"
    api.create_stream(src, content_type="application/json", data=[1, 2, 3], ttl_seconds=600)
    api.append(src, 4, producer=Producer("p-1", 0, 0))
    storage.create_stream(child, content_type=None, fork=storage.ForkSpec(src, 2))
    data = client.get(BASE + "streams/" + src).json()
    assert data["path"] == src and data["url"] == "/v1/stream/" + src
    assert data["kind"] == "json" and data["state"] == "open"
    assert data["message_count"] == 4 and data["size_bytes"] is None
    assert data["tail_offset"] == offsets.encode(4)
    assert data["ttl_seconds"] == 600 and data["expires_at"] is not None
    assert data["fork_count"] == 1 and data["forks"] == [child]
    assert [(p["producer_id"], p["epoch"], p["last_seq"]) for p in data["producers"]] == [
        ("p-1", 0, 0)
    ]
    fork = client.get(BASE + "streams/" + child).json()
    assert fork["forked_from"] == src and fork["fork_offset"] == offsets.encode(2)


def test_a_missing_stream_is_404(client):
    assert client.get(BASE + "streams/nope/" + uuid.uuid4().hex).status_code == 404


def test_listing_is_cursor_paginated_by_path_without_counting(client):
    tag = uuid.uuid4().hex[:8]
    paths = [f"{tag}/{i:02d}" for i in range(7)]
    for path in reversed(paths):
        api.create_stream(path)
    seen, page = [], listing(client, prefix=f"{tag}/", page_size=3)
    assert "count" not in page
    for _ in range(10):
        seen += [row["path"] for row in page["results"]]
        if not page["next"]:
            break
        with CaptureQueriesContext(connection) as captured:
            page = client.get(page["next"]).json()
        assert not [q for q in captured.captured_queries if "__count" in q["sql"]]
    assert seen == paths


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"kind": "json"}, {"json"}),
        ({"kind": "binary"}, {"bin", "fork"}),
        ({"state": "closed"}, {"fork"}),
        ({"state": "expired"}, {"old"}),
        ({"is_fork": "true"}, {"fork"}),
        ({"content_type": "text/"}, {"text", "old"}),
    ],
)
def test_listing_filters(client, params, expected):
    tag = uuid.uuid4().hex[:8]
    api.create_stream(f"{tag}/json", content_type="application/json")
    api.create_stream(f"{tag}/text", content_type="text/plain")
    api.create_stream(f"{tag}/old", content_type="text/plain", ttl_seconds=0)
    api.create_stream(f"{tag}/bin", content_type="application/octet-stream", data=b"\x01")
    storage.create_stream(
        f"{tag}/fork", content_type=None, closed=True, fork=storage.ForkSpec(f"{tag}/bin")
    )
    rows = listing(client, prefix=f"{tag}/", **params)["results"]
    assert {row["path"].split("/", 1)[1] for row in rows} == expected


def test_filter_by_fork_source_and_bad_filter_values_are_400(client):
    src = f"src-{uuid.uuid4().hex}"
    api.create_stream(src)
    storage.create_stream(src + "/f", content_type=None, fork=storage.ForkSpec(src))
    assert [r["path"] for r in listing(client, forked_from=src)["results"]] == [src + "/f"]
    assert client.get(BASE + "streams/", {"state": "melting"}).status_code == 400


def test_only_admin_users_by_default(django_user_model):
    anonymous = APIClient()
    assert anonymous.get(BASE + "streams/").status_code in (401, 403)
    user = django_user_model.objects.create_user("plain", password="pw")
    member = APIClient()
    member.force_authenticate(user)
    assert member.get(BASE + "streams/").status_code == 403
    assert member.get(BASE + "schema/").status_code == 403


def test_access_classes_come_from_the_settings(django_user_model, settings):
    user = django_user_model.objects.create_user("plain2", password="pw")
    member = APIClient()
    member.force_authenticate(user)
    opened = {
        **settings.DURABLE_STREAMS,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    }
    with override_settings(DURABLE_STREAMS=opened):
        assert member.get(BASE + "streams/").status_code == 200


def test_the_openapi_schema_describes_the_api(client):
    response = client.get(BASE + "schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["servers"] == [{"url": "http://testserver/api/durable-streams"}]
    assert set(schema["paths"]) == {"/streams/", "/streams/{stream_path}"}
    listing_op = schema["paths"]["/streams/"]["get"]
    assert listing_op["operationId"] == "list_streams"
    names = {p["name"] for p in listing_op["parameters"]}
    assert {
        "prefix",
        "kind",
        "state",
        "content_type",
        "forked_from",
        "is_fork",
        "cursor",
        "page_size",
    } <= names
    stream = schema["components"]["schemas"]["StreamDetail"]["properties"]
    assert {"tail_offset", "size_bytes", "message_count", "producers", "forks"} <= set(stream)
    as_json = client.get(BASE + "schema/", {"format": "json"})
    assert json.loads(as_json.content)["paths"].keys() == schema["paths"].keys()
