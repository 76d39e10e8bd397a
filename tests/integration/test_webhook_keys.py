"""Webhook signing keys in the database: persistence, JWKS, rotation (spec 6.5)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.utils import timezone
from jwcrypto import jwk

from durable_streams.subscriptions import signing, webhooks

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_key_cache():
    # Each test's rows roll back: never let a cached key outlive them.
    signing.forget_cached_key()
    yield
    signing.forget_cached_key()


def verify_with_jwks(jwks: dict, header: str, body: bytes) -> None:
    t, kid, sig = (part.split("=", 1)[1] for part in header.split(","))
    (public,) = [key for key in jwks["keys"] if key["kid"] == kid]
    jwk.JWK(**public).get_op_key("verify").verify(
        signing.b64url_decode(sig), t.encode() + b"." + body
    )


def test_the_key_is_created_once_and_loaded_from_the_database():
    first = signing.active_key()
    assert signing.WebhookSigningKey.objects.count() == 1
    signing.forget_cached_key()  # as a restarted process would
    again = signing.active_key()
    assert again.kid == first.kid
    body = b'{"x":1}'
    verify_with_jwks(signing.jwks(), again.sign(body), body)
    verify_with_jwks(signing.jwks(), first.sign(body), body)


def test_jwks_response_has_the_specified_headers_and_keys():
    response = webhooks.jwks_response()
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jwk-set+json"
    assert response["Cache-Control"] == "public, max-age=300"
    (key,) = json.loads(response.content)["keys"]
    assert key["kid"] == signing.active_kid()
    assert {k: key[k] for k in ("kty", "crv", "use", "alg")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "use": "sig",
        "alg": "EdDSA",
    }
    assert "d" not in key  # never the private part


def test_rotation_keeps_old_keys_published_through_the_replay_window():
    old = signing.active_key()
    body = b'{"wake_id":"w_1"}'
    signed_before = old.sign(body)
    t0 = timezone.now()
    new_kid, deleted = signing.rotate(now=t0)
    assert new_kid != old.kid and deleted == []
    assert signing.active_kid() == new_kid
    # Right after rotation, and until the replay window plus the key cache
    # time has passed, both keys are published and old signatures verify.
    horizon = dt.timedelta(seconds=signing.replay_window() + signing.KEY_CACHE_SECONDS)
    for later in (t0, t0 + horizon - dt.timedelta(seconds=1)):
        kids = [key["kid"] for key in signing.jwks(now=later)["keys"]]
        assert kids == [new_kid, old.kid]
        verify_with_jwks(signing.jwks(now=later), signed_before, body)
    # After it, the old key is no longer published...
    assert [key["kid"] for key in signing.jwks(now=t0 + horizon)["keys"]] == [new_kid]
    # ...and the next rotation deletes its private key.
    newer_kid, deleted = signing.rotate(now=t0 + horizon + dt.timedelta(seconds=1))
    assert deleted == [old.kid]
    assert sorted(signing.WebhookSigningKey.objects.values_list("kid", flat=True)) == sorted(
        [new_kid, newer_kid]
    )


def test_rotate_key_command(capsys):
    old = signing.active_kid()
    call_command("streams", "subscriptions", "rotate-key")
    out = capsys.readouterr().out
    new = signing.active_kid()
    assert new != old and new in out
    assert {key["kid"] for key in signing.jwks()["keys"]} == {old, new}
