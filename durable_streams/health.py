"""The health endpoint: is the database answering, is the notification listener up?

``GET`` answers ``200`` with ``{"status": "ok", ...}`` when both are, else
``503`` with ``"status": "unavailable"`` and which check failed, so a load
balancer can take the process out of rotation. It reveals no stream data and
needs no credentials. Each process has its own listener: the answer is about
the process that served it. Under WSGI the database check runs on Django's
connection of the request thread, and the listener check reports
``"live_reads": false`` (no live reads, so no listener, in such a process).
"""

from __future__ import annotations

import asyncio
import time

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from . import storage
from .live import get_listener
from .storage import drivers

# Seconds each check may take before it counts as failed.
CHECK_TIMEOUT = 3.0


async def _database() -> dict:
    started = time.monotonic()
    try:
        await asyncio.wait_for(storage.aping(), CHECK_TIMEOUT)
    except Exception as exc:  # any failure is the answer, not an error of this view
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


async def _listener() -> dict:
    if drivers.is_on_django_connection():
        # WSGI: the loop ends with this request and no live read is served
        # here; a LISTEN connection opened on it would outlive it.
        return {"ok": True, "live_reads": False}
    listener = get_listener()
    # Starts it if this process has not yet (a fresh process serves no live reader yet).
    await listener.start(wait=CHECK_TIMEOUT)
    if not listener.healthy:
        return {"ok": False, "error": "not connected (LISTEN)"}
    return {"ok": True, "waiting_readers": listener.waiting()}


@csrf_exempt  # no cookies, no state: a 405 for writes, not a CSRF 403
@require_safe
async def health_view(request: HttpRequest) -> JsonResponse:
    """200 when the database and this process's listener are healthy, else 503."""
    database, listener = await asyncio.gather(_database(), _listener())
    ok = database["ok"] and listener["ok"]
    response = JsonResponse(
        {"status": "ok" if ok else "unavailable", "database": database, "listener": listener},
        status=200 if ok else 503,
    )
    response["Cache-Control"] = "no-store"
    return response
