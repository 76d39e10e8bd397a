"""The receiver-side decorator: good signatures reach the view, forged or stale ones get 4xx."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.http import JsonResponse
from django.test import RequestFactory

from durable_streams.subscriptions import signing
from durable_streams.subscriptions.receiver import WebhookRejected, verify_webhook

KEY = signing.SigningKey.from_seed(bytes(range(32)))
OTHER = signing.SigningKey.from_seed(bytes(range(1, 33)))
BODY = json.dumps({"subscription_id": "orders", "wake_id": "w_1", "generation": 1}).encode()


def jwk_of(key: signing.SigningKey) -> dict:
    return signing.public_jwk(signing.public_x(key.private_key.public_key()))


class JwksServer:
    """Serves a JWK Set on loopback over real HTTP and counts the fetches."""

    def __init__(self, *keys: signing.SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = json.dumps({"keys": [jwk_of(k) for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1/stream/__ds/jwks.json"

    def __enter__(self) -> JwksServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def post(header: str | None, body: bytes = BODY):
    headers = {} if header is None else {"HTTP_WEBHOOK_SIGNATURE": header}
    return RequestFactory().post("/hook", body, content_type="application/json", **headers)


def make_view(url: str, **options):
    seen = []

    @verify_webhook(url, **options)
    def hook(request):
        seen.append(request.webhook)
        return JsonResponse({"done": True})

    return hook, seen


@pytest.fixture
def jwks():
    with JwksServer(KEY) as server:
        yield server


def test_a_good_signature_reaches_the_view(jwks):
    hook, seen = make_view(jwks.url)
    response = hook(post(KEY.sign(BODY)))
    assert response.status_code == 200
    assert json.loads(response.content) == {"done": True}
    (webhook,) = seen
    assert webhook.payload["wake_id"] == "w_1" and webhook.kid == KEY.kid
    assert getattr(hook, "csrf_exempt", False)


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 400),
        ("", 400),
        ("t=abc,kid=x,ed25519=y", 400),
        (KEY.sign(BODY) + ",extra=1", 400),
        # Signed by another key but naming ours: forged.
        (OTHER.sign(BODY).replace(OTHER.kid, KEY.kid), 401),
        # A key the server never published.
        (OTHER.sign(BODY), 401),
    ],
)
def test_missing_malformed_and_forged_signatures_are_refused(jwks, header, status):
    hook, seen = make_view(jwks.url)
    assert hook(post(header)).status_code == status
    assert seen == []


def test_a_signature_of_another_body_is_refused(jwks):
    hook, seen = make_view(jwks.url)
    tampered = BODY.replace(b'"generation": 1', b'"generation": 2')
    assert hook(post(KEY.sign(BODY), tampered)).status_code == 401
    assert seen == []


def test_stale_and_future_timestamps_are_refused(jwks):
    hook, seen = make_view(jwks.url, replay_window=300)
    now = int(time.time())
    assert hook(post(KEY.sign(BODY, timestamp=now - 400))).status_code == 401
    assert hook(post(KEY.sign(BODY, timestamp=now + 400))).status_code == 401
    assert seen == []
    assert hook(post(KEY.sign(BODY, timestamp=now - 200))).status_code == 200


def test_unexpected_subscription_is_forbidden(jwks):
    hook, seen = make_view(jwks.url, subscriptions={"invoices"})
    assert hook(post(KEY.sign(BODY))).status_code == 403
    assert seen == []


def test_a_rotated_key_is_picked_up_by_refetching_the_set(jwks):
    hook, seen = make_view(jwks.url, refresh_cooldown=0.5)
    assert hook(post(KEY.sign(BODY))).status_code == 200
    assert jwks.fetches == 1
    # The server rotates: the new key is published beside the old one. The
    # cached set does not know its kid, so the verifier refetches (once its
    # cooldown since the last fetch has passed; until then the server's retry
    # brings the delivery back).
    jwks.keys.insert(0, OTHER)
    time.sleep(0.6)
    assert hook(post(OTHER.sign(BODY))).status_code == 200
    assert hook(post(KEY.sign(BODY))).status_code == 200
    assert jwks.fetches == 2
    assert [w.kid for w in seen] == [KEY.kid, OTHER.kid, KEY.kid]


def test_unknown_kids_do_not_make_the_verifier_hammer_the_server(jwks):
    hook, seen = make_view(jwks.url, refresh_cooldown=60)
    forged = signing.SigningKey.from_seed(bytes(range(2, 34)))
    for _ in range(5):
        assert hook(post(forged.sign(BODY))).status_code == 401
    assert jwks.fetches <= 2
    assert seen == []


def test_unreachable_jwks_is_503_so_the_server_retries():
    with JwksServer(KEY) as gone:
        url = gone.url
    hook, seen = make_view(url, timeout=1)
    assert hook(post(KEY.sign(BODY))).status_code == 503
    assert seen == []


def test_only_post_is_a_webhook(jwks):
    hook, _ = make_view(jwks.url)
    assert hook(RequestFactory().get("/hook")).status_code == 405


async def test_async_views_are_verified_too(jwks):
    seen = []

    @verify_webhook(jwks.url)
    async def hook(request):
        seen.append(request.webhook.payload)
        return JsonResponse({"done": True})

    assert (await hook(post(KEY.sign(BODY)))).status_code == 200
    assert (await hook(post(OTHER.sign(BODY)))).status_code == 401
    assert len(seen) == 1


def test_rejection_carries_status_and_message():
    exc = WebhookRejected(401, "nope")
    assert (exc.status, exc.message, str(exc)) == (401, "nope", "nope")
