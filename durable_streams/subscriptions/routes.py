"""The reserved control routes under ``{stream root}/__ds/`` (spec 6 and 7).

The stream view hands every path whose first segment is ``__ds`` here
before it treats anything as a stream, on both entry points (the URLconf
view and the lean ASGI app), so no application stream can live there.

========================================  =================  =====================
route                                     methods            authorised by
========================================  =================  =====================
``jwks.json``                             GET                public (spec 6.5)
``subscriptions/:id``                     PUT, GET, DELETE   policy ``subscribe``
``subscriptions/:id/streams``             POST               policy ``subscribe``
``subscriptions/:id/streams/:path``       DELETE             policy ``subscribe``
``subscriptions/:id/claim``               POST               policy ``claim``
``subscriptions/:id/ack``, ``release``    POST               the claim token
``subscriptions/:id/callback``            POST               the callback token
========================================  =================  =====================
"""

from __future__ import annotations

import json
import logging

from django.http import HttpRequest, HttpResponse

from .. import permissions
from ..exceptions import StreamError
from ..executor import run
from . import config, engine
from .errors import SubscriptionError
from .models import Subscription

logger = logging.getLogger("durable_streams.subscriptions")

PREFIX = "__ds"


def is_control_path(stream_path: str) -> bool:
    """Whether ``stream_path`` is in the reserved ``__ds`` namespace."""
    return stream_path == PREFIX or stream_path.startswith(PREFIX + "/")


def json_response(data: dict, status: int = 200) -> HttpResponse:
    response = HttpResponse(
        json.dumps(data, separators=(",", ":")), status=status, content_type="application/json"
    )
    response["Cache-Control"] = "no-store"
    return response


def no_content() -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]
    response["Cache-Control"] = "no-store"
    return response


def error(exc: SubscriptionError) -> HttpResponse:
    response = json_response(exc.body(), exc.status)
    if exc.status == 405:
        response["Allow"] = exc.extra.pop("allow", "")
    return response


def _method_not_allowed(allowed: str) -> SubscriptionError:
    return SubscriptionError("METHOD_NOT_ALLOWED", "method not allowed", status=405, allow=allowed)


def root_url(request: HttpRequest, stream_path: str) -> str:
    """The absolute URL of the stream root this request came through."""
    prefix = request.path[: len(request.path) - len(stream_path)]
    return request.build_absolute_uri(prefix)


async def serve(request: HttpRequest, stream_path: str) -> HttpResponse:
    """Answer one request to a ``__ds`` path."""
    from . import runner

    runner.ensure_running()
    try:
        return await _dispatch(request, stream_path)
    except SubscriptionError as exc:
        return error(exc)
    except permissions.Unauthorized as exc:
        return error(SubscriptionError("UNAUTHORIZED", exc.message, status=401))
    except StreamError as exc:
        # The policy's refusals (403) and its own statuses.
        return error(SubscriptionError("FORBIDDEN", exc.message, status=exc.status))


async def _dispatch(request: HttpRequest, stream_path: str) -> HttpResponse:
    parts = stream_path.split("/")[1:]
    method = request.method
    if parts == ["jwks.json"]:
        if method != "GET":
            raise _method_not_allowed("GET")
        try:
            from . import webhooks
        except ImportError:  # the webhook half is not installed (see _check_webhook_url)
            raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "webhooks are not enabled") from None
        return await run(webhooks.jwks_response)
    if len(parts) < 2 or parts[0] != "subscriptions" or not parts[1]:
        raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "no such control route")
    name, tail = parts[1], parts[2:]
    control = f"{PREFIX}/subscriptions/{name}"
    if not tail:
        return await _subscription(request, stream_path, name, control)
    action = tail[0]
    if action == "streams":
        await permissions.authorize_control(request, permissions.Operation.SUBSCRIBE, control)
        if len(tail) == 1:
            if method != "POST":
                raise _method_not_allowed("POST")
            paths = config.parse_streams(request.body)
            await run(engine.add_streams, name, paths)
            return no_content()
        if method != "DELETE":
            raise _method_not_allowed("DELETE")
        path = config.stream_path("/".join(tail[1:]), "stream path")
        await run(engine.remove_stream, name, path)
        return no_content()
    if len(tail) != 1 or action not in ("claim", "ack", "release", "callback"):
        raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "no such control route")
    if method != "POST":
        raise _method_not_allowed("POST")
    if action == "claim":
        await permissions.authorize_control(request, permissions.Operation.CLAIM, control)
        worker = config.parse_claim(request.body)
        return json_response(await run(engine.claim, name, worker))
    # ack, release, callback: the bearer token is the authorisation (spec 12.9).
    from .tokens import bearer

    token = bearer(request.headers.get("Authorization"))
    if action == "release":
        wake = config.parse_wake_request(request.body, allow_acks=False)
        await run(engine.release, name, token, wake)
        _kick()
        return no_content()
    wake = config.parse_wake_request(request.body)
    kind = Subscription.TYPE_PULL_WAKE if action == "ack" else Subscription.TYPE_WEBHOOK
    result = await run(engine.acknowledge, name, token, wake, kind=kind)
    if result["next_wake"]:
        _kick()
    return json_response(result)


def _kick() -> None:
    from . import runner

    runner.kick()


async def _subscription(
    request: HttpRequest, stream_path: str, name: str, control: str
) -> HttpResponse:
    method = request.method
    if method not in ("PUT", "GET", "DELETE"):
        raise _method_not_allowed("PUT, GET, DELETE")
    await permissions.authorize_control(request, permissions.Operation.SUBSCRIBE, control)
    root = root_url(request, stream_path)
    if method == "DELETE":
        await run(engine.delete, name)
        return no_content()
    if method == "PUT":
        cfg = config.parse_create(request.body)
        if cfg.webhook_url is not None:
            _check_webhook_url(cfg.webhook_url)
        created, _ = await run(engine.create_or_confirm, name, cfg, root)
        if created:
            _kick()
        return json_response(await run(serialize, name, root), 201 if created else 200)
    return json_response(await run(serialize, name, root))


def _check_webhook_url(url: str) -> None:
    """The SSRF rules of spec 12.8 (:mod:`.ssrf`): 400 WEBHOOK_URL_REJECTED."""
    try:
        from . import ssrf
    except ImportError:
        # Webhook delivery (signing, sending, SSRF rules) ships separately from
        # the engine; without it, webhook subscriptions are refused, not stored.
        raise SubscriptionError(
            "INVALID_REQUEST", "webhook subscriptions are not enabled on this server"
        ) from None
    try:
        ssrf.check_webhook_url(url)
    except ssrf.UnsafeWebhookURL as exc:
        raise SubscriptionError("WEBHOOK_URL_REJECTED", str(exc)) from None


def serialize(name: str, root: str) -> dict:
    """The subscription as GET answers it (spec 6.3)."""
    sub, infos = engine.describe(name)
    webhook = None
    if sub.kind == Subscription.TYPE_WEBHOOK:
        from . import signing

        webhook = {
            "url": sub.webhook_url,
            "signing": {
                "alg": "ed25519",
                "kid": signing.active_kid(),
                "jwks_url": f"{root}{PREFIX}/jwks.json",
            },
        }
    return {
        "id": sub.name,
        "subscription_id": sub.name,
        "type": sub.kind,
        "pattern": sub.pattern,
        "streams": [info.as_dict(with_tail=False) for info in infos],
        "webhook": webhook,
        "wake_stream": sub.wake_stream,
        "lease_ttl_ms": sub.lease_ttl_ms,
        "created_at": sub.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "status": sub.status,
        "description": sub.description,
    }
