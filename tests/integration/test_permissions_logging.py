"""Failed stream requests are logged once each, with structured fields, at a
level that says how much an operator should care."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.test import AsyncClient, override_settings

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_POLICY = {"LONG_POLL_TIMEOUT": 1.0, "POLICY": "tests.policies.TokenPolicy"}


@pytest.fixture
async def client():
    yield AsyncClient()


def failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "request_failed"]


async def test_a_refused_request_is_logged_as_a_warning_with_its_facts(client, caplog):
    caplog.set_level(logging.INFO, logger="durable_streams.requests")
    path = f"rooms/{uuid.uuid4().hex}"
    with override_settings(DURABLE_STREAMS=TOKEN_POLICY):
        response = await client.put(f"/v1/stream/{path}", headers={"User-Agent": "probe/1.0"})
    assert response.status_code == 401
    (record,) = failures(caplog)
    assert record.levelno == logging.WARNING
    assert record.name == "durable_streams.requests"
    assert (record.http_method, record.http_path, record.stream_path) == (
        "PUT",
        f"/v1/stream/{path}",
        path,
    )
    assert (record.http_status, record.reason) == (401, "authentication required")
    assert (record.client_ip, record.user_agent) == ("127.0.0.1", "probe/1.0")
    assert record.duration_ms >= 0
    assert record.getMessage() == f"PUT /v1/stream/{path} -> 401 authentication required"


async def test_ordinary_client_errors_are_info_and_successes_are_not_logged(client, caplog):
    caplog.set_level(logging.INFO, logger="durable_streams.requests")
    path = f"s-{uuid.uuid4().hex}"
    admin = {"Authorization": "Bearer admin-token"}
    with override_settings(DURABLE_STREAMS=TOKEN_POLICY):
        assert (await client.get(f"/v1/stream/{path}", headers=admin)).status_code == 404
        assert (await client.put(f"/v1/stream/{path}", headers=admin)).status_code == 201
    (record,) = failures(caplog)
    assert (record.levelno, record.http_status, record.reason) == (
        logging.INFO,
        404,
        "stream not found",
    )
