"""Who may do what to which stream: the policy hook, DRF integration, a safe default.

Stream URLs are guessable, so every request to the stream view is checked
before any work is done. The operation is derived from the request:

========================================  ==============================
``PUT``                                   ``create``
``PUT`` with ``Stream-Forked-From``       ``fork`` (and ``read`` of the source)
``POST`` with a body                      ``append``
``POST`` with ``Stream-Closed: true``     ``close`` (and ``append`` if it has a body)
``GET``, ``HEAD`` (every read mode)       ``read``
``DELETE``                                ``delete``
``OPTIONS`` (CORS preflight)              not checked
========================================  ==============================

``DURABLE_STREAMS["POLICY"]`` names a :class:`Policy` subclass with one method
per operation; ``DURABLE_STREAMS["DRF_RULES"]`` alone selects :class:`DRFPolicy`,
which reuses Django REST framework authentication and permission classes per
path prefix. With neither, :class:`DebugOnlyPolicy` allows everything while
``DEBUG`` is on and refuses everything (reads included) when it is off.
"""

from __future__ import annotations

import copy
import enum
import inspect
import weakref
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from . import executor, headers
from .conf import ds_settings
from .exceptions import BadRequest, Forbidden, StreamError

__all__ = [
    "AllowAll",
    "DRFPolicy",
    "DebugOnlyPolicy",
    "Forbidden",
    "Operation",
    "Policy",
    "Unauthorized",
    "authorize",
    "get_policy",
    "operations_for",
]


class Operation(enum.StrEnum):
    CREATE = "create"
    APPEND = "append"
    CLOSE = "close"
    READ = "read"
    DELETE = "delete"
    FORK = "fork"
    SUBSCRIBE = "subscribe"
    CLAIM = "claim"


class Unauthorized(StreamError):
    """401: the request carries no (valid) credentials."""

    status = 401

    def __init__(self, message: str = "authentication required", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


_FORBIDDEN = "forbidden"


class Policy:
    """Decides, per operation, whether a request may act on a stream.

    Subclass it and override the methods of the operations you allow; the
    base class denies everything. Each method gets the request and the stream
    path (relative to where the stream URLs are mounted) and returns True to
    allow or False to deny (403). Raise :class:`Unauthorized` (401) or
    :class:`~durable_streams.exceptions.Forbidden` (403) to choose the status
    and message yourself.

    Methods may be plain functions or coroutines. Plain ones run on a
    database thread, so they may use the ORM and ``request.user``; coroutines
    run on the event loop and must not block (use ``await request.auser()``).
    """

    def can_create(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        return False

    def can_append(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        return False

    def can_close(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        return False

    def can_read(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        return False

    def can_delete(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        return False

    def can_fork(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        """Create ``path`` as a fork. ``can_read`` of the source is checked too."""
        return False

    def can_subscribe(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        """Create, read, change or delete the subscription at ``path``
        (``__ds/subscriptions/<id>``, spec 6)."""
        return False

    def can_claim(self, request: HttpRequest, path: str) -> bool | Awaitable[bool]:
        """Claim a wake of the pull-wake subscription at ``path`` (spec 7.2);
        acks and releases are authorised by the claim's token instead."""
        return False

    def is_public(self, path: str) -> bool:
        """Whether shared caches (CDNs, proxies) may keep reads of ``path``.

        False makes read responses ``Cache-Control: private`` (spec 10.1): the
        safe answer for any stream whose reads need credentials. Must not block.
        """
        return False


class AllowAll(Policy):
    """Everyone may do everything, and reads are public. For demos and
    streams that are public by design, never for user data."""

    async def can_create(self, request: HttpRequest, path: str) -> bool:
        return True

    can_append = can_close = can_read = can_delete = can_fork = can_create
    can_subscribe = can_claim = can_create

    def is_public(self, path: str) -> bool:
        return True


_NO_POLICY = "stream access is refused: no DURABLE_STREAMS['POLICY'] is configured and DEBUG is off"


class DebugOnlyPolicy(Policy):
    """The default: everything is allowed while ``settings.DEBUG`` is on, and
    nothing (reads included: stream URLs are guessable) when it is off. The
    system check ``durable_streams.W010`` warns about the latter."""

    async def can_create(self, request: HttpRequest, path: str) -> bool:
        if settings.DEBUG:
            return True
        raise Forbidden(_NO_POLICY)

    can_append = can_close = can_read = can_delete = can_fork = can_create
    can_subscribe = can_claim = can_create

    def is_public(self, path: str) -> bool:
        return bool(settings.DEBUG)


# --- Django REST framework -----------------------------------------------------------


@dataclass(frozen=True)
class DRFRule:
    """Authentication and permission classes for the streams under ``prefix``."""

    prefix: str
    authentication_classes: tuple[type, ...]
    permission_classes: tuple[type, ...]
    public: bool = False


class StreamAccessView:
    """What DRF permission classes see as ``view``.

    ``action`` is the operation (``"read"``, ``"append"``, ...), like a
    viewset's action, and ``kwargs["stream_path"]`` the stream's path, so a
    permission class can decide per operation and per stream.
    """

    def __init__(self, request: Any, path: str, action: str, rule: DRFRule) -> None:
        self.request = request
        self.stream_path = path
        self.action = action
        self.rule = rule
        self.args: tuple = ()
        self.kwargs = {"stream_path": path}


def import_classes(value: Iterable[Any] | None, default: Iterable[Any]) -> tuple[type, ...]:
    """Classes from a list of classes or dotted paths; ``default`` if None."""
    items = default if value is None else value
    return tuple(import_string(item) if isinstance(item, str) else item for item in items)


def compile_rules(rules: Iterable[dict]) -> list[DRFRule]:
    """Validate ``DRF_RULES`` and sort them longest prefix first.

    Missing ``authentication_classes`` / ``permission_classes`` default to
    DRF's ``DEFAULT_AUTHENTICATION_CLASSES`` / ``DEFAULT_PERMISSION_CLASSES``.
    Raises ``ValueError`` / ``ImportError`` on a malformed rule.
    """
    from rest_framework.settings import api_settings

    compiled = []
    for rule in rules:
        if not isinstance(rule, dict) or not isinstance(rule.get("prefix"), str):
            raise ValueError(f"each DRF rule needs a 'prefix' string: {rule!r}")
        unknown = set(rule) - {"prefix", "authentication_classes", "permission_classes", "public"}
        if unknown:
            raise ValueError(f"unknown DRF rule keys {sorted(unknown)} in {rule!r}")
        compiled.append(
            DRFRule(
                prefix=rule["prefix"],
                authentication_classes=import_classes(
                    rule.get("authentication_classes"), api_settings.DEFAULT_AUTHENTICATION_CLASSES
                ),
                permission_classes=import_classes(
                    rule.get("permission_classes"), api_settings.DEFAULT_PERMISSION_CLASSES
                ),
                public=bool(rule.get("public", False)),
            )
        )
    return sorted(compiled, key=lambda r: len(r.prefix), reverse=True)


class UnreadBody:
    """A DRF parser that accepts every content type and never reads the body.

    Django's CSRF check (run by ``SessionAuthentication``) looks at
    ``request.POST`` for a form token; on a DRF request that parses the body,
    and with no parser for a stream's content type DRF answered 415. The body
    belongs to the stream view, so the check sees no form data and the token
    comes from the ``X-CSRFToken`` header, as browser apps send it.
    """

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> dict:
        return {}


class DRFPolicy(Policy):
    """Reuse a project's DRF authentication and permission classes per path prefix.

    Rules come from the ``rules`` class attribute or, if that is None, from
    ``DURABLE_STREAMS["DRF_RULES"]``; the longest matching ``prefix`` wins and
    a path no rule covers is refused. Every check runs the rule's
    authenticators (session, token, ...) on the request, then each permission
    class's ``has_permission(request, view)`` with a :class:`StreamAccessView`.
    A refusal answers as DRF would: 401 with ``WWW-Authenticate`` when the
    request was not authenticated and the first authenticator names a scheme,
    else 403. ``SessionAuthentication`` enforces CSRF on writes, as in DRF.
    """

    rules: list[dict] | None = None

    def __init__(self) -> None:
        rules = self.rules if self.rules is not None else ds_settings.DRF_RULES
        self.compiled = compile_rules(rules or [])

    def rule_for(self, path: str) -> DRFRule | None:
        for rule in self.compiled:
            if path.startswith(rule.prefix):
                return rule
        return None

    def check(self, request: HttpRequest, path: str, action: str) -> bool:
        """Run the matching rule for ``action``; sync, as DRF is."""
        from rest_framework import exceptions
        from rest_framework.request import Request

        rule = self.rule_for(path)
        if rule is None:
            raise Forbidden("no access rule covers this stream")
        drf_request = Request(
            request,
            authenticators=[cls() for cls in rule.authentication_classes],
            parsers=[UnreadBody()],
        )
        view = StreamAccessView(drf_request, path, action, rule)
        try:
            for permission_class in rule.permission_classes:
                permission = permission_class()
                if not permission.has_permission(drf_request, view):
                    message = str(getattr(permission, "message", None) or _FORBIDDEN)
                    if drf_request.authenticators and not drf_request.successful_authenticator:
                        raise exceptions.NotAuthenticated(message)
                    raise exceptions.PermissionDenied(message)
        except exceptions.APIException as exc:
            raise _from_drf(exc, drf_request) from None
        return True

    def can_create(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.CREATE)

    def can_append(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.APPEND)

    def can_close(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.CLOSE)

    def can_read(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.READ)

    def can_delete(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.DELETE)

    def can_fork(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.FORK)

    def can_subscribe(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.SUBSCRIBE)

    def can_claim(self, request: HttpRequest, path: str) -> bool:
        return self.check(request, path, Operation.CLAIM)

    def is_public(self, path: str) -> bool:
        rule = self.rule_for(path)
        return rule is not None and rule.public


def _from_drf(exc: Any, drf_request: Any) -> StreamError:
    """A DRF exception as the protocol error the stream view answers with."""
    from rest_framework import exceptions

    message = str(exc.detail) if isinstance(exc.detail, str) else _FORBIDDEN
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        authenticators = drf_request.authenticators
        header = authenticators[0].authenticate_header(drf_request) if authenticators else None
        if header:
            return Unauthorized(message, headers={"WWW-Authenticate": header})
        return Forbidden(message)  # no scheme to name: DRF answers 403 too
    status = exc.status_code if 400 <= exc.status_code < 500 else 403
    return StreamError(message, status=status)


# --- resolving and running the policy -----------------------------------------------

_policy: Policy | None = None


def get_policy() -> Policy:
    """The configured policy instance (built once per settings change)."""
    global _policy
    if _policy is None:
        _policy = load_policy()
    return _policy


def load_policy() -> Policy:
    """Build the policy ``DURABLE_STREAMS`` names; raises on a bad value."""
    configured = ds_settings.POLICY
    if configured is None:
        return DRFPolicy() if ds_settings.DRF_RULES else DebugOnlyPolicy()
    cls = import_string(configured) if isinstance(configured, str) else configured
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"{configured!r} is not a durable_streams.permissions.Policy subclass")
    return cls()


@receiver(setting_changed)
def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    global _policy
    if setting == "DURABLE_STREAMS":
        _policy = None


def _has_body(request: HttpRequest) -> bool:
    length = request.META.get("CONTENT_LENGTH") or ""
    if length.strip() not in ("", "0"):
        return True
    return "chunked" in (headers.get(request, "Transfer-Encoding") or "").lower()


def operations_for(request: HttpRequest) -> list[Operation]:
    """The operations a request performs (empty: not checked, e.g. OPTIONS)."""
    method = request.method
    if method in ("GET", "HEAD"):
        return [Operation.READ]
    if method == "PUT":
        forked = headers.get(request, "Stream-Forked-From") is not None
        return [Operation.FORK if forked else Operation.CREATE]
    if method == "POST":
        if not headers.flag(headers.get(request, "Stream-Closed")):
            return [Operation.APPEND]
        # Appending with Stream-Closed writes data too: both must be allowed.
        return [Operation.APPEND, Operation.CLOSE] if _has_body(request) else [Operation.CLOSE]
    if method == "DELETE":
        return [Operation.DELETE]
    return []


def _fork_source(request: HttpRequest, path: str) -> str | None:
    """The source path of a fork PUT, as the view will resolve it; None when
    the header is malformed (the view then answers 400 without reading it)."""
    try:
        return headers.fork_source(headers.get(request, "Stream-Forked-From"), request.path, path)
    except BadRequest:
        return None


# Whether a policy's check is a coroutine function, by its function: asked on
# every request, and inspect's answer costs about ten calls. Weak, so checks
# made on the fly (a closure per policy instance) are not kept.
_is_coroutine: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


async def _allowed(policy: Policy, operation: Operation, request: HttpRequest, path: str) -> None:
    method = getattr(policy, f"can_{operation}")
    function = getattr(method, "__func__", method)
    try:
        is_coroutine = _is_coroutine.get(function)
    except TypeError:  # not weakly referenceable: not cached
        is_coroutine = inspect.iscoroutinefunction(method)
    if is_coroutine is None:
        is_coroutine = _is_coroutine[function] = inspect.iscoroutinefunction(method)
    if is_coroutine:
        allowed = await method(request, path)
    else:
        allowed = await executor.run(method, request, path)
    if not allowed:
        raise Forbidden(_FORBIDDEN)


async def _staff_reader(request: HttpRequest) -> bool:
    """A logged-in admin user (the admin's live tail) reading through the stream URL."""
    if (
        not ds_settings.ADMIN_READS
        # No Cookie header: no session, and no parsing of cookies to find out.
        or "HTTP_COOKIE" not in request.META
        or settings.SESSION_COOKIE_NAME not in request.COOKIES
    ):
        return False
    auser = getattr(request, "auser", None)
    if auser is not None:
        user = await auser()
    else:
        # Served without middleware (durable_streams.asgi): load the session here.
        from django.apps import apps

        if not (
            apps.is_installed("django.contrib.sessions")
            and apps.is_installed("django.contrib.auth")
        ):
            return False
        from django.contrib.auth import aget_user

        store = import_module(settings.SESSION_ENGINE).SessionStore
        session_request = copy.copy(request)
        session_request.session = store(request.COOKIES[settings.SESSION_COOKIE_NAME])
        user = await aget_user(session_request)
    return bool(
        user.is_active and user.is_staff and await user.ahas_perm("durable_streams.view_stream")
    )


@dataclass(frozen=True)
class Access:
    """A granted request; adjusts its response's caching to the policy."""

    public: bool

    def apply(self, response: HttpResponse) -> None:
        """Make ``public`` caching ``private`` for streams that need credentials."""
        if self.public:
            return
        value = response.get("Cache-Control")
        if not value or "no-store" in value or "private" in value:
            return
        if value.startswith("public"):
            response["Cache-Control"] = "private" + value[len("public") :]
        else:
            response["Cache-Control"] = "private, " + value


async def authorize(request: HttpRequest, path: str) -> Access | None:
    """Check the request against the policy before any stream work.

    Raises :class:`Unauthorized` (401) or ``Forbidden`` (403); returns the
    :class:`Access` to apply to the response, or None for unchecked methods.
    """
    operations = operations_for(request)
    if not operations:
        return None
    if operations == [Operation.READ] and await _staff_reader(request):
        return Access(public=False)
    policy = get_policy()
    for operation in operations:
        await _allowed(policy, operation, request, path)
    if operations == [Operation.FORK]:
        source = _fork_source(request, path)
        if source is not None:
            # A fork exposes its source's data: its reader must be able to read it.
            as_read = copy.copy(request)
            as_read.method = "GET"
            await _allowed(policy, Operation.READ, as_read, source)
    return Access(public=policy.is_public(path))


async def authorize_control(request: HttpRequest, operation: Operation, path: str) -> None:
    """Check a ``__ds`` control request (``subscribe`` or ``claim``) against the
    policy; ``path`` is the control path, e.g. ``__ds/subscriptions/<id>``."""
    await _allowed(get_policy(), operation, request, path)


def check_configuration() -> list:
    """System check messages for the access-control settings."""
    from django.core.checks import Error, Warning

    try:
        policy = load_policy()
    except Exception as exc:
        return [
            Error(
                f"DURABLE_STREAMS['POLICY'] / ['DRF_RULES'] cannot be loaded: {exc}",
                id="durable_streams.E010",
            )
        ]
    if isinstance(policy, DebugOnlyPolicy) and not settings.DEBUG:
        return [
            Warning(
                "No stream access policy is configured and DEBUG is off: EVERY request to "
                "the stream URLs (reads included) is refused with 403.",
                hint="Set DURABLE_STREAMS['POLICY'] to a durable_streams.permissions.Policy "
                "subclass, or DURABLE_STREAMS['DRF_RULES'] to reuse your DRF authentication "
                "and permission classes. 'durable_streams.permissions.AllowAll' opens every "
                "stream to everyone.",
                id="durable_streams.W010",
            )
        ]
    return []
