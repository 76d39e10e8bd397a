"""Stream access for the example project: only members read a session.

``sessions/<uuid>`` streams are read by the session's members (their Django
login session cookie) and written by nobody over the stream URL: users write
through the session views (which check membership and stamp the author), and
agents write in-process. Every other stream keeps the example project's demo
rule (anyone may do anything, :class:`~durable_streams.permissions.AllowAll`).
"""

from __future__ import annotations

import copy
from importlib import import_module

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest

from durable_streams.permissions import AllowAll, Unauthorized

from .schema import STREAM_PREFIX, session_id_of


def request_user(request: HttpRequest):
    """The logged-in user of a request, also when served without middleware
    (the lean ``StreamsASGIApp`` entry point sets no ``request.user``)."""
    user = getattr(request, "user", None)
    if user is not None:
        return user
    store = import_module(settings.SESSION_ENGINE).SessionStore
    with_session = copy.copy(request)
    with_session.session = store(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    return get_user(with_session)


def _is_member(request: HttpRequest, path: str) -> bool:
    from .models import Membership

    user = request_user(request)
    if not user.is_authenticated:
        raise Unauthorized("sign in to read this session")
    session_id = session_id_of(path)
    return (
        session_id is not None
        and Membership.objects.filter(session_id=session_id, user=user).exists()
    )


class SessionsPolicy(AllowAll):
    """Members read their sessions' streams; nobody writes them over HTTP."""

    # Coroutines: the demo streams' answers need no database, so they are
    # given on the event loop; only a session's membership check takes a
    # database thread (a plain method would take one for every request).
    async def can_read(self, request: HttpRequest, path: str) -> bool:
        if not path.startswith(STREAM_PREFIX):
            return True
        return await sync_to_async(_is_member)(request, path)

    async def _not_sessions(self, request: HttpRequest, path: str) -> bool:
        return not path.startswith(STREAM_PREFIX)

    can_create = can_append = can_close = can_delete = can_fork = _not_sessions

    def is_public(self, path: str) -> bool:
        return not path.startswith(STREAM_PREFIX)
