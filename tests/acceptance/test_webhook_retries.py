"""Webhook retries survive a server restart: the persisted schedule is honoured
(spec 7.1: retry metadata, including next_attempt_at, persisted)."""

from __future__ import annotations

import json
import time

import httpx
import psycopg
import pytest

from durable_streams.subscriptions.delivery import IN_FLIGHT
from durable_streams.subscriptions.models import Subscription

from ..support import unique
from ..unit.webhook_receiver import LoopbackReceiver

pytestmark = pytest.mark.django_db
JSON = {"Content-Type": "application/json"}


def row(name: str) -> Subscription:
    return Subscription.objects.get(name=name, deleted_at__isnull=True)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def retry_pending_and_locked(conn: psycopg.Connection, name: str, attempts: int) -> float | None:
    """Lock the subscription's row; if ``attempts`` sends failed and the next
    is scheduled but not yet taken for sending, keep the lock (the open
    transaction) and return its time; else release it and return None."""
    found = conn.execute(
        "SELECT attempts, status, extract(epoch FROM next_attempt_at),"
        " next_attempt_at - now() < %s FROM durable_streams_subscription"
        " WHERE name = %s AND deleted_at IS NULL FOR UPDATE",
        [IN_FLIGHT / 2, name],
    ).fetchone()
    if found is not None and found[:2] == (attempts, "failed") and found[3]:
        return float(found[2])
    conn.rollback()
    assert found is None or found[0] <= attempts, "missed the retry window"
    return None


def test_a_restart_in_the_middle_of_retries_keeps_the_schedule(server_factory, test_database_url):
    server = server_factory()
    name, path = unique("sub"), unique("retry") + "/orders"
    with LoopbackReceiver() as receiver, httpx.Client(timeout=10) as http:
        receiver.fail_first(3)  # 503 three times, then {"done": true}
        receiver.reply(200, b'{"done": true}')
        created = http.put(
            server.stream_url(f"__ds/subscriptions/{name}"),
            json={
                "type": "webhook",
                "pattern": path.split("/")[0] + "/*",
                "webhook": {"url": receiver.url},
            },
        )
        assert created.status_code == 201, created.text
        assert http.put(server.stream_url(path), headers=JSON, content=b"[]").status_code == 201
        assert http.post(server.stream_url(path), headers=JSON, content=b'{"n":1}').status_code in (
            200,
            204,
        )

        # Two failed deliveries: the second scheduled the third 2 s (+-20 %) later.
        # The server dies before the retry is due, and comes back: the barrier
        # is the subscription's row lock, held from the moment the second
        # failure is recorded until the server is dead, so the third attempt
        # cannot be taken (and go in flight for IN_FLIGHT) however slow we are.
        with psycopg.connect(test_database_url) as locker:
            scheduled = wait_until(
                lambda: retry_pending_and_locked(locker, name, attempts=2),
                what="the second failure",
            )
            assert len(receiver.requests) == 2
            second_failed_at = receiver.requests[1].received_at
            assert scheduled - second_failed_at >= 2 * 0.8 - 0.5
            server.kill9()
        server.start()

        # The third attempt honours the persisted time, not "now, from scratch".
        receiver.wait_for(3, timeout=30)
        assert receiver.requests[2].received_at >= scheduled - 0.05
        # And the count went on: after the third failure the delay is 4 s (+-20 %),
        # not the 1 s of a schedule that restarted.
        sub = wait_until(lambda: (s := row(name)).attempts == 3 and s, what="third failure")
        third_failed_at = receiver.requests[2].received_at
        assert sub.next_attempt_at.timestamp() - third_failed_at >= 4 * 0.8 - 0.5

        # The fourth attempt succeeds with {"done": true}: the snapshot is acked.
        receiver.wait_for(4, timeout=30)
        wake = json.loads(receiver.requests[3].body)
        assert receiver.requests[3].received_at >= sub.next_attempt_at.timestamp() - 0.05
        tail = next(s["tail_offset"] for s in wake["streams"] if s["path"] == path)

        def acked() -> bool:
            body = http.get(server.stream_url(f"__ds/subscriptions/{name}")).json()
            return body["status"] == "active" and any(
                s["path"] == path and s["acked_offset"] == tail for s in body["streams"]
            )

        wait_until(acked, what="the auto-ack of the snapshot")
        assert row(name).attempts == 0
        # Every attempt carried the same wake (same generation), signed.
        assert len({json.loads(r.body)["wake_id"] for r in receiver.requests}) == 1
        assert all(r.headers["webhook-signature"].startswith("t=") for r in receiver.requests)
        http.delete(server.stream_url(f"__ds/subscriptions/{name}"))
