"""Presence with a heartbeat: who has the session open right now.

A page says ``join`` when it opens, ``beat`` every ``HEARTBEAT_SECONDS`` and
``leave`` when it is closed (``pagehide``, best effort). A page that vanishes
without ``leave`` (a killed browser, a lost network) is marked offline by
:func:`sweep` once it missed beats for ``OFFLINE_AFTER_SECONDS``: the agent
runner sweeps every ``SWEEP_SECONDS``, so a closed tab shows offline within
``OFFLINE_AFTER_SECONDS + SWEEP_SECONDS`` (30 s + 5 s by default).

Only status changes reach the stream: heartbeats write ``last_seen`` with the
model's events paused.
"""

from __future__ import annotations

import datetime as dt
import os

from django.db import transaction
from django.utils import timezone

from durable_streams import state

from .models import ChatSession, Presence

HEARTBEAT_SECONDS = float(os.environ.get("SESSIONS_HEARTBEAT_SECONDS", "10"))
OFFLINE_AFTER_SECONDS = float(os.environ.get("SESSIONS_OFFLINE_AFTER_SECONDS", "30"))
SWEEP_SECONDS = float(os.environ.get("SESSIONS_SWEEP_SECONDS", "5"))


def set_status(
    session: ChatSession,
    *,
    actor_id: str,
    device_id: str,
    user_name: str,
    actor_type: str = "user",
    status: str = Presence.ONLINE,
) -> Presence:
    """Mark an actor's device online or offline; emits an event only on a change."""
    now = timezone.now()
    with transaction.atomic():
        presence, created = Presence.objects.select_for_update().get_or_create(
            session=session,
            actor_id=actor_id,
            device_id=device_id,
            defaults={
                "actor_type": actor_type,
                "user_name": user_name,
                "status": status,
                "last_seen": now,
            },
        )
        if created:
            return presence
        if presence.status != status or presence.user_name != user_name:
            presence.status, presence.user_name, presence.last_seen = status, user_name, now
            presence.save()  # a presence update event
        else:
            beat(presence, now)
    return presence


def beat(presence: Presence, now: dt.datetime | None = None) -> None:
    """Record a heartbeat without an event (``last_seen`` is not in the value)."""
    with state.paused():
        Presence.objects.filter(pk=presence.pk).update(last_seen=now or timezone.now())


def sweep(now: dt.datetime | None = None) -> int:
    """Mark offline every online presence that missed its heartbeats; returns how many."""
    cutoff = (now or timezone.now()) - dt.timedelta(seconds=OFFLINE_AFTER_SECONDS)
    count = 0
    stale = Presence.objects.filter(status=Presence.ONLINE, last_seen__lt=cutoff, actor_type="user")
    for pk in stale.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            presence = (
                Presence.objects.select_for_update()
                .filter(pk=pk, status=Presence.ONLINE, last_seen__lt=cutoff)
                .first()
            )
            if presence is not None:
                presence.status = Presence.OFFLINE
                presence.save()
                count += 1
    return count
