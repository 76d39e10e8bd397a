"""Subscription state in PostgreSQL: every change of it, under its row lock.

Each public function is one transaction on the Django connection (run it on
a database thread from async code). Wake state changes only while the
subscription row is locked, and a wake is issued only when the row is idle
(no wake in flight, no live lease), so however many server processes and
``streams deliver`` workers evaluate the same subscription at once, each
wake is issued exactly once. Appends never lock a subscription: the append
trigger (migration 0002) only links newly matching streams and notifies.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, OperationalError, connections, transaction
from django.utils import timezone

from .. import content, offsets, storage
from ..conf import ds_settings
from ..exceptions import StreamError
from . import fencing, globs, tokens
from .config import SubscriptionConfig, WakeRequest
from .errors import SubscriptionError, invalid
from .models import Subscription, SubscriptionLink

logger = logging.getLogger("durable_streams.subscriptions")

_STREAM = "durable_streams_stream"
_SUB = "durable_streams_subscription"
_LINK = "durable_streams_subscription_link"


def _alias() -> str:
    return ds_settings.DATABASE_ALIAS


def _atomic():
    return transaction.atomic(using=_alias())


def _cursor():
    return connections[_alias()].cursor()


def _subs():
    return Subscription.objects.using(_alias())


def subscriptions_qs():
    """Every subscription row (tombstones included) on the stream database."""
    return _subs()


def not_found() -> SubscriptionError:
    return SubscriptionError("SUBSCRIPTION_NOT_FOUND", "subscription not found")


# --- reading -----------------------------------------------------------------------


def tails(paths: Iterable[str]) -> dict[str, int]:
    """The tail position of each live stream among ``paths`` (absent: not there)."""
    paths = list(paths)
    if not paths:
        return {}
    with _cursor() as cursor:
        cursor.execute(
            f"SELECT path, tail FROM {_STREAM} WHERE path = ANY(%s) AND deleted_at IS NULL",
            [paths],
        )
        return dict(cursor.fetchall())


@dataclass(frozen=True)
class LinkInfo:
    """One linked stream as wake payloads and claims report it (spec 7.1)."""

    path: str
    explicit: bool
    acked: int
    tail: int

    @property
    def has_pending(self) -> bool:
        return self.tail > self.acked

    def as_dict(self, *, with_tail: bool = True) -> dict:
        data = {
            "path": self.path,
            "link_type": "explicit" if self.explicit else "glob",
            "acked_offset": offsets.encode(self.acked),
        }
        if with_tail:
            data["tail_offset"] = offsets.encode(self.tail)
            data["has_pending"] = self.has_pending
        return data


def link_infos(sub: Subscription) -> list[LinkInfo]:
    links = list(SubscriptionLink.objects.using(_alias()).filter(subscription=sub).order_by("path"))
    tail_of = tails(link.path for link in links)
    return [
        LinkInfo(link.path, link.explicit, link.acked, tail_of.get(link.path, 0)) for link in links
    ]


def find(name: str, *, lock: bool = False) -> Subscription | None:
    """The live subscription called ``name``."""
    qs = _subs().filter(name=name, deleted_at__isnull=True)
    if lock:
        qs = qs.select_for_update()
    return qs.first()


def describe(name: str) -> tuple[Subscription, list[LinkInfo]]:
    """The subscription and its links (for GET and the admin)."""
    sub = find(name)
    if sub is None:
        raise not_found()
    return sub, link_infos(sub)


# --- configuration -------------------------------------------------------------------


def _link(sub: Subscription, paths: list[str], *, explicit: bool) -> None:
    """Link ``paths`` at their current tails; an existing link keeps its cursor."""
    if not paths:
        return
    with _cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_LINK} (subscription_id, path, explicit, acked, linked_at)"
            f" SELECT %s, p, %s, COALESCE(s.tail, 0), now() FROM unnest(%s::text[]) AS p"
            f" LEFT JOIN {_STREAM} s ON s.path = p AND s.deleted_at IS NULL"
            f" ON CONFLICT (subscription_id, path) DO UPDATE"
            f" SET explicit = {_LINK}.explicit OR EXCLUDED.explicit",
            [sub.pk, explicit, paths],
        )


def _backfill(sub: Subscription) -> None:
    """Link every existing stream the pattern matches, at its tail (spec 6.2)."""
    with _cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_LINK} (subscription_id, path, explicit, acked, linked_at)"
            f" SELECT %s, path, false, tail, now() FROM {_STREAM}"
            f" WHERE deleted_at IS NULL AND ('/' || path) ~ %s"
            f" AND split_part(path, '/', 1) <> '__ds'"
            f" ON CONFLICT (subscription_id, path) DO NOTHING",
            [sub.pk, sub.pattern_regex],
        )


def create_or_confirm(name: str, cfg: SubscriptionConfig, root_url: str) -> tuple[bool, str]:
    """Create ``name``, or confirm an identical one (spec 6.2).

    Returns ``(created, name)``; SUBSCRIPTION_ALREADY_EXISTS (409) when a live
    subscription of that name has another configuration.
    """
    digest = cfg.config_hash()
    for _ in range(3):
        try:
            with _atomic():
                existing = find(name, lock=True)
                if existing is not None:
                    if existing.config_hash != digest:
                        raise SubscriptionError(
                            "SUBSCRIPTION_ALREADY_EXISTS",
                            "a subscription with this id exists with another configuration",
                        )
                    return False, name
                sub = _subs().create(
                    name=name,
                    kind=cfg.type,
                    pattern=cfg.pattern,
                    pattern_regex=globs.to_regex(cfg.pattern) if cfg.pattern else None,
                    webhook_url=cfg.webhook_url,
                    wake_stream=cfg.wake_stream,
                    lease_ttl_ms=cfg.lease_ttl_ms,
                    description=cfg.description,
                    config_hash=digest,
                    root_url=root_url,
                    created_at=timezone.now(),
                )
                _link(sub, list(cfg.streams), explicit=True)
                if sub.pattern_regex:
                    _backfill(sub)
                return True, name
        except IntegrityError:
            continue  # a concurrent PUT created it first: compare with it
    raise SubscriptionError("SUBSCRIPTION_ALREADY_EXISTS", "concurrent creation of this id")


def delete(name: str) -> None:
    """Tombstone the subscription: its wake, lease and tokens die with it."""
    with _atomic():
        sub = find(name, lock=True)
        if sub is None:
            return
        sub.deleted_at = timezone.now()
        sub.wake_id = sub.holder = sub.lease_expires_at = sub.next_attempt_at = None
        sub.wake_snapshot = None
        sub.save(using=_alias())
        SubscriptionLink.objects.using(_alias()).filter(subscription=sub).delete()


def add_streams(name: str, paths: list[str]) -> None:
    """Link ``paths`` explicitly, at their current tails (spec 6.4)."""
    with _atomic():
        sub = find(name, lock=True)
        if sub is None:
            raise not_found()
        _link(sub, paths, explicit=True)


def remove_stream(name: str, path: str) -> None:
    """Drop the explicit link of ``path``; a pattern link of it stays (spec 6.4)."""
    with _atomic():
        sub = find(name, lock=True)
        if sub is None:
            raise not_found()
        links = SubscriptionLink.objects.using(_alias()).filter(subscription=sub, path=path)
        if sub.pattern and globs.matches(sub.pattern, path):
            links.update(explicit=False)
        else:
            links.filter(explicit=True).delete()


# --- wakes ---------------------------------------------------------------------------


def _state(sub: Subscription) -> fencing.WakeState:
    return fencing.WakeState(sub.pk, sub.generation, sub.wake_id, sub.holder, sub.lease_expires_at)


def _lease(sub: Subscription, now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(milliseconds=sub.lease_ttl_ms)


def _clear_wake(sub: Subscription) -> None:
    sub.wake_id = sub.holder = sub.lease_expires_at = None
    sub.wake_snapshot = None


def _notify(sub: Subscription) -> None:
    """Tell every engine (this process included) that ``sub`` changed."""
    with _cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [ds_settings.NOTIFY_CHANNEL, f"s{sub.pk}"])


def _issue_wake(
    sub: Subscription, infos: list[LinkInfo], now: dt.datetime, *, event: bool = True
) -> None:
    """Start a new wake generation; the caller holds the row lock and saves."""
    sub.generation += 1
    sub.wake_id = fencing.new_wake_id()
    sub.wake_snapshot = {info.path: info.tail for info in infos}
    sub.woken_at = now
    sub.holder = None
    if sub.kind == Subscription.TYPE_WEBHOOK:
        # The lease runs from the wake (spec 7.3); delivery is due now unless
        # a failed delivery's persisted backoff says later.
        sub.lease_expires_at = _lease(sub, now)
        if sub.next_attempt_at is None or sub.next_attempt_at < now:
            sub.next_attempt_at = now
        _notify(sub)
    else:
        sub.lease_expires_at = None
        if event:
            pending = next((info.path for info in infos if info.has_pending), None)
            _write_wake_event(sub, pending, now)


def _write_wake_event(sub: Subscription, stream: str | None, now: dt.datetime) -> None:
    """Append the wake event to the pull-wake subscription's wake stream (spec 7.2)."""
    event = {
        "type": "wake",
        "subscription_id": sub.name,
        "stream": stream,
        "generation": sub.generation,
        "ts": int(now.timestamp() * 1000),
    }
    try:
        meta = storage.require_stream(sub.wake_stream)
        raw = json.dumps(event, separators=(",", ":")).encode()
        if not content.is_json(meta.content_type):
            raw += b"\n"
        payload = content.parse_body(meta.content_type, raw, allow_empty_json=False)
        # Inside our transaction (the Django connection): the event and the
        # wake state commit together.
        storage.append(sub.wake_stream, content_type=meta.content_type, payload=payload)
    except StreamError as exc:
        # The wake stream is the application's (spec 7.2); claims still work.
        logger.warning(
            "subscription %s: cannot write wake event to %s: %s", sub.name, sub.wake_stream, exc
        )


def _wake_if_pending(sub: Subscription, now: dt.datetime) -> bool:
    infos = link_infos(sub)
    if not any(info.has_pending for info in infos):
        return False
    _issue_wake(sub, infos, now)
    return True


def _retrying(operation):
    """Run a locking transaction again after a deadlock or serialization failure."""
    for attempt in range(5):
        try:
            return operation()
        except OperationalError as exc:
            cause = getattr(exc, "__cause__", None)
            if getattr(cause, "sqlstate", None) not in ("40P01", "40001") or attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


def evaluate(pk: int) -> bool:
    """Issue a wake for subscription ``pk`` if it is idle and has pending work.

    Waits for the row lock rather than skipping it: whoever holds it may have
    judged pending work before the append that notified us committed.
    """

    def run() -> bool:
        with _atomic():
            now = timezone.now()
            sub = (
                _subs()
                .select_for_update()
                .filter(pk=pk, deleted_at__isnull=True, wake_id__isnull=True)
                .first()
            )
            if sub is None or not _state(sub).is_idle(now):
                return False
            woke = _wake_if_pending(sub, now)
            if woke:
                sub.save(using=_alias())
            return woke

    return bool(_retrying(run))


def idle_with_pending_work() -> list[int]:
    """Subscriptions that are idle but have pending work: after a listener
    outage, or a notification that raced a wake's end."""
    with _cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT l.subscription_id FROM {_LINK} l"
            f" JOIN {_SUB} s ON s.id = l.subscription_id"
            f" LEFT JOIN {_STREAM} t ON t.path = l.path AND t.deleted_at IS NULL"
            f" WHERE s.deleted_at IS NULL AND s.wake_id IS NULL"
            f" AND COALESCE(t.tail, 0) > l.acked"
        )
        return [row[0] for row in cursor.fetchall()]


def expire_leases() -> int:
    """Clear holders whose lease ran out and wake again if work remains (spec 7.3).

    Webhook wakes whose delivery is still due or in flight are left to the
    retry schedule. Rows another process is handling are skipped.
    """

    def run() -> int:
        now = timezone.now()
        with _atomic():
            subs = list(
                _subs()
                .select_for_update(skip_locked=True)
                .filter(deleted_at__isnull=True, lease_expires_at__lte=now)
                .exclude(kind=Subscription.TYPE_WEBHOOK, next_attempt_at__isnull=False)[:100]
            )
            for sub in subs:
                logger.info("subscription %s: lease of %s expired", sub.name, sub.holder)
                _clear_wake(sub)
                _wake_if_pending(sub, now)
                sub.save(using=_alias())
            return len(subs)

    return int(_retrying(run) or 0)


def next_deadline() -> dt.datetime | None:
    """The earliest lease expiry or due delivery, to sleep until."""
    with _cursor() as cursor:
        cursor.execute(
            f"SELECT LEAST(MIN(lease_expires_at), MIN(next_attempt_at)) FROM {_SUB}"
            f" WHERE deleted_at IS NULL"
        )
        return cursor.fetchone()[0]


# --- claim, ack, callback, release -------------------------------------------------------


def claim(name: str, worker: str) -> dict:
    """Take the lease of a pull-wake subscription's current wake (spec 7.2)."""

    def run() -> dict:
        now = timezone.now()
        with _atomic():
            sub = find(name, lock=True)
            if sub is None:
                raise not_found()
            if sub.kind != Subscription.TYPE_PULL_WAKE:
                raise invalid("subscription is not pull-wake")
            state = _state(sub)
            if sub.holder is not None and not state.lease_expired(now):
                raise SubscriptionError(
                    "ALREADY_CLAIMED",
                    "another worker holds the lease",
                    current_holder=sub.holder,
                    generation=sub.generation,
                )
            if sub.holder is not None:
                _clear_wake(sub)  # the previous holder's lease ran out: its wake is over
            infos = link_infos(sub)
            if not any(info.has_pending for info in infos):
                sub.save(using=_alias())
                raise SubscriptionError("NO_PENDING_WORK", "subscription has no pending work")
            if sub.wake_id is None:
                # Claimed without a wake event: the claim itself is the wake.
                _issue_wake(sub, infos, now, event=False)
            sub.holder = worker
            sub.lease_expires_at = _lease(sub, now)
            sub.save(using=_alias())
            return {
                "wake_id": sub.wake_id,
                "generation": sub.generation,
                "token": tokens.issue(sub.pk, sub.generation, sub.wake_id),
                "streams": [info.as_dict() for info in infos],
                "lease_ttl_ms": sub.lease_ttl_ms,
            }

    return _retrying(run)


def _fenced_row(name: str, token: str, request: WakeRequest, kind: str, now: dt.datetime):
    claims = tokens.verify(token)
    sub = find(name, lock=True)
    if sub is None:
        # Deleted (or never existed): in-flight requests fail, nothing moves.
        raise not_found()
    if sub.kind != kind:
        raise invalid(f"subscription is not {kind}")
    fencing.check_wake(_state(sub), claims, request, now)
    return sub


def _apply_acks(sub: Subscription, request: WakeRequest) -> None:
    if not request.acks:
        return
    links = {
        link.path: link
        for link in SubscriptionLink.objects.using(_alias())
        .select_for_update()
        .filter(subscription=sub, path__in={ack.stream for ack in request.acks})
    }
    moved = fencing.ack_positions(
        request.acks, {path: link.acked for path, link in links.items()}, tails(links)
    )
    for path, position in moved.items():
        link = links[path]
        if position != link.acked:
            link.acked = position
            link.save(using=_alias(), update_fields=["acked"])


def acknowledge(name: str, token: str, request: WakeRequest, *, kind: str) -> dict:
    """An ack (pull-wake) or callback (webhook): apply acks all-or-nothing,
    extend the lease, and with ``done`` end the wake (spec 7.1, 7.2)."""

    def run() -> dict:
        now = timezone.now()
        with _atomic():
            sub = _fenced_row(name, token, request, kind, now)
            _apply_acks(sub, request)
            next_wake = False
            if request.done:
                _clear_wake(sub)
                next_wake = _wake_if_pending(sub, now)
            else:
                sub.lease_expires_at = _lease(sub, now)
            sub.save(using=_alias())
            return {"ok": True, "next_wake": next_wake}

    return _retrying(run)


def release(name: str, token: str, request: WakeRequest) -> None:
    """Give the lease back without acking; wake again if work remains (spec 7.2)."""

    def run() -> None:
        now = timezone.now()
        with _atomic():
            sub = _fenced_row(name, token, request, Subscription.TYPE_PULL_WAKE, now)
            _clear_wake(sub)
            _wake_if_pending(sub, now)
            sub.save(using=_alias())

    _retrying(run)
