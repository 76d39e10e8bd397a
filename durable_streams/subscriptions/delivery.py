"""Webhook deliveries: who sends which wake, and what its answer changes.

A webhook wake is due while ``next_attempt_at`` is set and past. One engine
takes it (``FOR UPDATE SKIP LOCKED``) and pushes ``next_attempt_at`` past
the time a send may take, so no other process sends it meanwhile and a
process that dies mid-send is replaced after that. The HTTP request itself
(:func:`durable_streams.subscriptions.webhooks.deliver`) runs outside any
transaction; its outcome is recorded only if the wake is still current.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

from django.utils import timezone

from .. import offsets
from . import engine, tokens
from .models import Subscription, SubscriptionLink

# A send that has not reported back after this long is assumed lost.
IN_FLIGHT = dt.timedelta(seconds=60)


def action_url(root_url: str, name: str, action: str) -> str:
    """``{stream root}/__ds/subscriptions/<id>/<action>``."""
    return f"{root_url}__ds/subscriptions/{quote(name, safe='')}/{action}"


@dataclass(frozen=True)
class Delivery:
    """One webhook request to send: where, and the body (spec 7.1)."""

    pk: int
    name: str
    url: str
    generation: int
    wake_id: str
    payload: dict


def _payload(sub: Subscription) -> dict:
    snapshot = sub.wake_snapshot or {}
    links = SubscriptionLink.objects.using(engine._alias()).filter(subscription=sub)
    streams = []
    for link in links.order_by("path"):
        tail = snapshot.get(link.path, link.acked)
        streams.append(
            {
                "path": link.path,
                "link_type": "explicit" if link.explicit else "glob",
                "acked_offset": offsets.encode(link.acked),
                "tail_offset": offsets.encode(max(tail, link.acked)),
                "has_pending": tail > link.acked,
            }
        )
    return {
        "subscription_id": sub.name,
        "wake_id": sub.wake_id,
        "generation": sub.generation,
        "streams": streams,
        "callback_url": action_url(sub.root_url, sub.name, "callback"),
        "callback_token": tokens.issue(sub.pk, sub.generation, sub.wake_id),
    }


def take_due(limit: int = 20) -> list[Delivery]:
    """Take up to ``limit`` due deliveries for this process to send."""
    now = timezone.now()
    with engine._atomic():
        subs = list(
            engine._subs()
            .select_for_update(skip_locked=True)
            .filter(
                kind=Subscription.TYPE_WEBHOOK,
                deleted_at__isnull=True,
                wake_id__isnull=False,
                next_attempt_at__lte=now,
            )
            .order_by("next_attempt_at")[:limit]
        )
        deliveries = []
        for sub in subs:
            sub.next_attempt_at = now + IN_FLIGHT
            # The receiver's lease runs from the send, not from the queueing.
            sub.lease_expires_at = engine._lease(sub, now + IN_FLIGHT)
            sub.save(using=engine._alias(), update_fields=["next_attempt_at", "lease_expires_at"])
            deliveries.append(
                Delivery(
                    sub.pk, sub.name, sub.webhook_url, sub.generation, sub.wake_id, _payload(sub)
                )
            )
        return deliveries


def record(delivery: Delivery, *, ok: bool, done: bool, error: str | None) -> bool:
    """Store a send's outcome; False if the wake is no longer current.

    Failure: the persisted backoff schedule moves on (status ``failed``).
    Success: ``active``, and the receiver's lease starts; with ``done`` the
    wake snapshot is acked and the wake ends, and a new one starts if work
    arrived since (spec 7.1).
    """
    from . import webhooks

    def run() -> bool:
        now = timezone.now()
        with engine._atomic():
            sub = (
                engine._subs()
                .select_for_update()
                .filter(pk=delivery.pk, deleted_at__isnull=True)
                .first()
            )
            if sub is None or (sub.generation, sub.wake_id) != (
                delivery.generation,
                delivery.wake_id,
            ):
                return False
            if not ok:
                sub.attempts += 1
                sub.status = "failed"
                sub.last_error = (error or "delivery failed")[:1000]
                sub.next_attempt_at = webhooks.next_attempt_at(sub.attempts, now)
                sub.lease_expires_at = engine._lease(sub, sub.next_attempt_at)
                sub.save(using=engine._alias())
                return True
            sub.attempts = 0
            sub.status = "active"
            sub.last_error = None
            sub.next_attempt_at = None
            sub.last_delivered_at = now
            if done:
                _ack_snapshot(sub)
                engine._clear_wake(sub)
                engine._wake_if_pending(sub, now)
            else:
                sub.lease_expires_at = engine._lease(sub, now)
            sub.save(using=engine._alias())
            return True

    return bool(engine._retrying(run))


def _ack_snapshot(sub: Subscription) -> None:
    """Ack the tails the wake reported (never moving a cursor back)."""
    for path, tail in (sub.wake_snapshot or {}).items():
        SubscriptionLink.objects.using(engine._alias()).filter(
            subscription=sub, path=path, acked__lt=tail
        ).update(acked=tail)
