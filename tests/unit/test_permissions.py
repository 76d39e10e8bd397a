"""Access control without a server: which operations a request performs, how
policies are loaded and run, caching per policy, and the system checks."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from durable_streams import checks
from durable_streams.exceptions import Forbidden
from durable_streams.permissions import (
    Access,
    AllowAll,
    DebugOnlyPolicy,
    DRFPolicy,
    Operation,
    Policy,
    Unauthorized,
    authorize,
    compile_rules,
    get_policy,
    load_policy,
    operations_for,
)

from ..policies import RoomsDRFPolicy, TokenPolicy

rf = RequestFactory()
BASE = {"LONG_POLL_TIMEOUT": 2.0}


def request(method: str, path: str = "/v1/stream/a", body: bytes = b"", **headers: str):
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    return rf.generic(method, path, data=body, content_type="text/plain", **extra)


# --- which operation a request is -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body", "headers", "expected"),
    [
        ("GET", b"", {}, [Operation.READ]),
        ("HEAD", b"", {}, [Operation.READ]),
        ("PUT", b"", {}, [Operation.CREATE]),
        ("PUT", b"x", {"Stream-Forked-From": "/v1/stream/b"}, [Operation.FORK]),
        ("POST", b"x", {}, [Operation.APPEND]),
        ("POST", b"", {"Stream-Closed": "true"}, [Operation.CLOSE]),
        ("POST", b"x", {"Stream-Closed": "true"}, [Operation.APPEND, Operation.CLOSE]),
        ("POST", b"", {"Stream-Closed": "false"}, [Operation.APPEND]),
        ("DELETE", b"", {}, [Operation.DELETE]),
        ("OPTIONS", b"", {}, []),
        ("PATCH", b"", {}, []),
    ],
)
def test_requests_map_to_the_operations_they_perform(method, body, headers, expected):
    assert operations_for(request(method, body=body, **headers)) == expected


def test_a_chunked_close_with_unknown_length_counts_as_an_append_too():
    req = request("POST", **{"Stream-Closed": "true", "Transfer-Encoding": "chunked"})
    req.META.pop("CONTENT_LENGTH", None)
    assert operations_for(req) == [Operation.APPEND, Operation.CLOSE]


# --- loading the policy ----------------------------------------------------------------------


def test_no_policy_and_no_rules_is_the_debug_only_default():
    with override_settings(DURABLE_STREAMS=BASE):
        assert type(get_policy()) is DebugOnlyPolicy


def test_drf_rules_alone_select_the_drf_policy():
    rules = [{"prefix": "", "permission_classes": ["rest_framework.permissions.AllowAny"]}]
    with override_settings(DURABLE_STREAMS={**BASE, "DRF_RULES": rules}):
        policy = get_policy()
        assert type(policy) is DRFPolicy
        assert policy.rule_for("x").prefix == ""


def test_policy_is_rebuilt_when_the_setting_changes():
    with override_settings(DURABLE_STREAMS={**BASE, "POLICY": "tests.policies.TokenPolicy"}):
        assert type(get_policy()) is TokenPolicy
        with override_settings(DURABLE_STREAMS={**BASE, "POLICY": AllowAll}):
            assert type(get_policy()) is AllowAll
        assert type(get_policy()) is TokenPolicy


def test_a_policy_that_is_not_a_policy_class_is_refused():
    with (
        override_settings(DURABLE_STREAMS={**BASE, "POLICY": "tests.policies.TOKENS"}),
        pytest.raises(TypeError, match=r"not a durable_streams\.permissions\.Policy"),
    ):
        load_policy()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"permission_classes": []}], "needs a 'prefix'"),
        (["rooms/"], "needs a 'prefix'"),
        ([{"prefix": "a/", "permissions": []}], "unknown DRF rule keys"),
    ],
)
def test_malformed_drf_rules_are_refused(rules, message):
    with pytest.raises(ValueError, match=message):
        compile_rules(rules)


def test_drf_rules_match_the_longest_prefix_and_import_dotted_classes():
    from rest_framework.permissions import IsAuthenticated

    policy = RoomsDRFPolicy()
    assert policy.rule_for("rooms/1").prefix == "rooms/"
    assert policy.rule_for("rooms/1").permission_classes[0] is IsAuthenticated
    assert policy.rule_for("feeds/x").public is True
    assert policy.rule_for("elsewhere").prefix == ""
    assert policy.is_public("feeds/x") and not policy.is_public("rooms/1")


def test_drf_rules_without_classes_use_the_drf_defaults():
    from rest_framework.settings import api_settings

    (rule,) = compile_rules([{"prefix": "x/"}])
    assert rule.permission_classes == tuple(api_settings.DEFAULT_PERMISSION_CLASSES)
    assert rule.authentication_classes == tuple(api_settings.DEFAULT_AUTHENTICATION_CLASSES)


# Sync policy methods run on a database thread (durable_streams.executor), which
# checks its connection before each call.
_db_thread = pytest.mark.django_db


# --- running it ----------------------------------------------------------------------------


async def test_debug_only_policy_allows_everything_while_debug_is_on():
    with override_settings(DEBUG=True, DURABLE_STREAMS=BASE):
        for method in ("GET", "PUT", "POST", "DELETE"):
            access = await authorize(request(method, body=b"x"), "a")
            assert access == Access(public=True)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST", "DELETE"])
async def test_debug_only_policy_refuses_everything_when_debug_is_off(method):
    with override_settings(DEBUG=False, DURABLE_STREAMS=BASE):
        with pytest.raises(Forbidden, match="no DURABLE_STREAMS\\['POLICY'\\]"):
            await authorize(request(method, body=b"x"), "a")


async def test_preflight_is_never_checked():
    with override_settings(DEBUG=False, DURABLE_STREAMS=BASE):
        assert await authorize(request("OPTIONS"), "a") is None


@_db_thread
async def test_the_base_policy_denies_every_operation_with_403():
    with override_settings(DURABLE_STREAMS={**BASE, "POLICY": Policy}):
        for method in ("GET", "PUT", "POST", "DELETE"):
            with pytest.raises(Forbidden) as caught:
                await authorize(request(method, body=b"x"), "a")
            assert caught.value.status == 403


@_db_thread
async def test_sync_and_async_policy_methods_are_both_honoured():
    with override_settings(DURABLE_STREAMS={**BASE, "POLICY": "tests.policies.TokenPolicy"}):
        bearer = {"Authorization": "Bearer reader-token"}
        # can_read is a coroutine, can_append a plain method run on a thread.
        assert await authorize(request("GET", **bearer), "a") == Access(public=False)
        with pytest.raises(Forbidden):
            await authorize(request("POST", body=b"x", **bearer), "a")
        with pytest.raises(Unauthorized) as caught:
            await authorize(request("POST", body=b"x"), "a")
        assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


@_db_thread
async def test_appending_with_close_needs_both_permissions():
    with override_settings(DURABLE_STREAMS={**BASE, "POLICY": "tests.policies.TokenPolicy"}):
        closing = {"Stream-Closed": "true", "Authorization": "Bearer appender-token"}
        with pytest.raises(Forbidden):
            await authorize(request("POST", body=b"last", **closing), "a")
        await authorize(request("POST", body=b"more", Authorization="Bearer appender-token"), "a")


@_db_thread
async def test_forking_needs_read_access_to_the_source():
    with override_settings(DURABLE_STREAMS={**BASE, "POLICY": "tests.policies.TokenPolicy"}):
        fork = {"Stream-Forked-From": "/v1/stream/src", "Authorization": "Bearer forker-token"}
        with pytest.raises(Forbidden):
            await authorize(request("PUT", "/v1/stream/dst", **fork), "dst")
        # A public source is readable by anyone, so the same token may fork it.
        fork["Stream-Forked-From"] = "/v1/stream/public/src"
        assert await authorize(request("PUT", "/v1/stream/dst", **fork), "dst") is not None


# --- caching follows the policy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "public, max-age=60, stale-while-revalidate=300",
            "private, max-age=60, stale-while-revalidate=300",
        ),
        ("no-cache", "private, no-cache"),
        ("no-store", "no-store"),
        ("private, max-age=5", "private, max-age=5"),
    ],
)
def test_streams_that_need_auth_are_never_cached_publicly(given, expected):
    response = HttpResponse()
    response["Cache-Control"] = given
    Access(public=False).apply(response)
    assert response["Cache-Control"] == expected


def test_public_streams_keep_their_cache_control():
    response = HttpResponse()
    response["Cache-Control"] = "public, max-age=60"
    Access(public=True).apply(response)
    assert response["Cache-Control"] == "public, max-age=60"


# --- system checks -----------------------------------------------------------------------------


def test_no_policy_with_debug_off_warns_loudly():
    with override_settings(DEBUG=False, DURABLE_STREAMS=BASE):
        (warning,) = checks.check_access_policy()
        assert warning.id == "durable_streams.W010"
        assert "EVERY request" in warning.msg


def test_no_policy_with_debug_on_is_quiet():
    with override_settings(DEBUG=True, DURABLE_STREAMS=BASE):
        assert checks.check_access_policy() == []


def test_a_configured_policy_is_quiet_with_debug_off():
    with override_settings(DEBUG=False, DURABLE_STREAMS={**BASE, "POLICY": AllowAll}):
        assert checks.check_access_policy() == []


@pytest.mark.parametrize(
    "config",
    [
        {"POLICY": "no.such.Policy"},
        {"POLICY": "tests.policies.TOKENS"},
        {"DRF_RULES": [{"prefix": "a/", "permission_classes": ["no.such.Class"]}]},
    ],
)
def test_a_policy_that_cannot_be_loaded_is_an_error(config):
    with override_settings(DURABLE_STREAMS={**BASE, **config}):
        (error,) = checks.check_access_policy()
        assert error.id == "durable_streams.E010"
