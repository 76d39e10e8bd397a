"""Access policies the access-control tests run servers with (``DS_TEST_POLICY``).

They are real policies a project could ship, not stand-ins: the token policy
mixes sync and async methods so both ways of running a policy are exercised,
and the DRF policy uses DRF's own authentication and permission classes.
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework.permissions import BasePermission

from durable_streams.permissions import DRFPolicy, Policy, Unauthorized

# Bearer token -> the operations it grants.
TOKENS = {
    "reader-token": {"read"},
    "writer-token": {"read", "create", "append", "close"},
    "appender-token": {"read", "append"},
    "forker-token": {"create", "fork"},
    "admin-token": {"read", "create", "append", "close", "delete", "fork"},
}


def _grants(request: HttpRequest) -> set[str]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="streams"'})
    grants = TOKENS.get(token.strip())
    if grants is None:
        raise Unauthorized(
            "invalid token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return grants


class TokenPolicy(Policy):
    """Bearer tokens; ``public/...`` streams are readable by anyone and cacheable."""

    async def can_read(self, request: HttpRequest, path: str) -> bool:
        if path.startswith("public/"):
            return True
        return "read" in _grants(request)

    # Sync methods: run on a database thread by the view.
    def can_create(self, request: HttpRequest, path: str) -> bool:
        return "create" in _grants(request)

    def can_append(self, request: HttpRequest, path: str) -> bool:
        return "append" in _grants(request)

    def can_close(self, request: HttpRequest, path: str) -> bool:
        return "close" in _grants(request)

    def can_delete(self, request: HttpRequest, path: str) -> bool:
        return "delete" in _grants(request)

    def can_fork(self, request: HttpRequest, path: str) -> bool:
        return "fork" in _grants(request)

    def is_public(self, path: str) -> bool:
        return path.startswith("public/")


class NoDeleteAction(BasePermission):
    """Uses ``view.action``: nobody deletes streams under the rule's prefix."""

    message = "streams here are never deleted"

    def has_permission(self, request, view) -> bool:
        return view.action != "delete"


class RoomsDRFPolicy(DRFPolicy):
    """DRF classes per prefix, as a project would configure ``DRF_RULES``."""

    rules = [
        {
            # Members only: HTTP Basic (Django users), and never deleted.
            "prefix": "rooms/",
            "authentication_classes": ["rest_framework.authentication.BasicAuthentication"],
            "permission_classes": [
                "rest_framework.permissions.IsAuthenticated",
                "tests.policies.NoDeleteAction",
            ],
        },
        {
            # Anyone reads, signed-in users write; reads are cacheable.
            "prefix": "feeds/",
            "authentication_classes": ["rest_framework.authentication.BasicAuthentication"],
            "permission_classes": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
            "public": True,
        },
        {
            # Everything else: staff only; session auth names no scheme (403).
            "prefix": "",
            "authentication_classes": ["rest_framework.authentication.SessionAuthentication"],
            "permission_classes": ["rest_framework.permissions.IsAdminUser"],
        },
    ]
