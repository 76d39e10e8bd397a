"""Sending one webhook (spec 7.1): signed body, done detection, failures, backoff."""

from __future__ import annotations

import datetime as dt
import json
import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.test import override_settings

from durable_streams.subscriptions import signing, webhooks

from .webhook_receiver import LoopbackReceiver

KEY = signing.SigningKey.from_seed(bytes(range(32)))
DEVELOPMENT = {"DEBUG": True, "DURABLE_STREAMS": {"WEBHOOK_TIMEOUT": 1.0}}
PAYLOAD = {"subscription_id": "sub-1", "wake_id": "w_1", "generation": 3, "note": "ünïcode"}


async def send(url: str, payload=PAYLOAD) -> webhooks.Outcome:
    try:
        return await webhooks.deliver(url, payload, key=KEY)
    finally:
        await webhooks.close_pool()


@override_settings(**DEVELOPMENT)
async def test_delivery_posts_signed_json_that_verifies_against_the_public_jwk():
    with LoopbackReceiver() as receiver:
        outcome = await send(receiver.url)
    assert outcome == webhooks.Outcome(ok=True, done=False, status=200)
    (request,) = receiver.requests
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == PAYLOAD
    t, kid, sig = request.headers["webhook-signature"].split(",")
    assert kid == f"kid={KEY.kid}"
    public = signing.public_jwk(signing.public_x(KEY.private_key.public_key()))
    # Verified from the published JWK's "x" alone (a JOSE library does the same
    # in tests/integration/test_webhook_keys.py).
    verifier = Ed25519PublicKey.from_public_bytes(signing.b64url_decode(public["x"]))
    verifier.verify(
        signing.b64url_decode(sig.removeprefix("ed25519=")),
        t.removeprefix("t=").encode() + b"." + request.body,
    )


@override_settings(**DEVELOPMENT)
async def test_done_true_in_the_answer_is_reported():
    with LoopbackReceiver() as receiver:
        receiver.reply(200, b'{"done": true}')
        assert (await send(receiver.url)).done
        receiver.reply(202, b'{"done": true, "extra": 1}')
        assert (await send(receiver.url)).done
        for body in (b'{"done": false}', b'{"done": "true"}', b"[true]", b"not json", b""):
            receiver.reply(200, body)
            outcome = await send(receiver.url)
            assert outcome.ok and not outcome.done, body


@override_settings(**DEVELOPMENT)
async def test_error_answers_and_done_in_an_error_answer_are_failures():
    with LoopbackReceiver() as receiver:
        receiver.reply(500, b'{"done": true}')
        outcome = await send(receiver.url)
    assert outcome == webhooks.Outcome(ok=False, done=False, status=500, error="HTTP 500")


@override_settings(**DEVELOPMENT)
async def test_unreachable_and_slow_receivers_are_failures_not_exceptions():
    with LoopbackReceiver() as receiver:
        port = receiver.port
    outcome = await send(f"http://127.0.0.1:{port}/gone")
    assert not outcome.ok and outcome.status is None and "Connect" in outcome.error
    with LoopbackReceiver() as receiver:
        receiver.reply(200, b'{"done": true}', delay=3.0)
        outcome = await send(receiver.url)
    assert not outcome.ok and outcome.error


@override_settings(DEBUG=False, DURABLE_STREAMS={})
async def test_delivery_rechecks_the_url_rules():
    with LoopbackReceiver() as receiver:
        outcome = await send(receiver.url)
    assert not outcome.ok and "SSRF" in outcome.error
    assert receiver.requests == []


def test_backoff_doubles_from_one_second_to_sixty_with_twenty_percent_jitter():
    rng = random.Random(7)
    for failures, base in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (12, 60), (50, 60)]:
        delays = [webhooks.retry_delay(failures, rng) for _ in range(200)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays), failures
        assert max(delays) - min(delays) > base * 0.2  # jitter is there


def test_next_attempt_is_now_plus_the_delay():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    at = webhooks.next_attempt_at(3, now)
    assert dt.timedelta(seconds=3.2) <= at - now <= dt.timedelta(seconds=4.8)
