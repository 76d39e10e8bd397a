"""The DURABLE_STREAMS setting (lazy, merged, reset on change) and system checks."""

from __future__ import annotations

import types

import pytest
from django.conf import settings
from django.core import checks as django_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from durable_streams import checks
from durable_streams.conf import DEFAULTS, Settings, ds_settings

# --- conf -------------------------------------------------------------------------------


def test_unset_keys_fall_back_to_the_defaults():
    with override_settings(DURABLE_STREAMS={}):
        for key, value in DEFAULTS.items():
            assert getattr(ds_settings, key) == value


def test_a_none_setting_means_all_defaults():
    with override_settings(DURABLE_STREAMS=None):
        assert ds_settings.LONG_POLL_TIMEOUT == DEFAULTS["LONG_POLL_TIMEOUT"]
        assert ds_settings.unknown_keys() == []
    assert ds_settings.LONG_POLL_TIMEOUT == settings.DURABLE_STREAMS["LONG_POLL_TIMEOUT"]


def test_user_values_are_merged_over_the_defaults():
    with override_settings(DURABLE_STREAMS={"MAX_CHUNK_SIZE": 123}):
        assert ds_settings.MAX_CHUNK_SIZE == 123
        assert ds_settings.LONG_POLL_TIMEOUT == DEFAULTS["LONG_POLL_TIMEOUT"]


def test_the_test_settings_are_in_force():
    assert ds_settings.LONG_POLL_TIMEOUT == settings.DURABLE_STREAMS["LONG_POLL_TIMEOUT"]
    assert ds_settings.SSE_KEEPALIVE_INTERVAL == 1.0


def test_override_settings_is_seen_inside_and_reset_after():
    before = ds_settings.MAX_CHUNK_SIZE
    with override_settings(DURABLE_STREAMS={"MAX_CHUNK_SIZE": 7}):
        assert ds_settings.MAX_CHUNK_SIZE == 7
        with override_settings(DURABLE_STREAMS={"MAX_CHUNK_SIZE": 9}):
            assert ds_settings.MAX_CHUNK_SIZE == 9
        assert ds_settings.MAX_CHUNK_SIZE == 7
    assert ds_settings.MAX_CHUNK_SIZE == before


def test_settings_are_read_lazily_and_cached_until_they_change():
    Settings.reset()
    assert Settings._cache is None  # nothing read at reset or import time
    assert ds_settings.MAX_CHUNK_SIZE
    assert Settings._cache is not None
    cached = Settings._cache
    assert ds_settings.LONG_POLL_TIMEOUT
    assert Settings._cache is cached
    with override_settings(DURABLE_STREAMS={"MAX_CHUNK_SIZE": 1}):
        assert Settings._cache is None  # dropped by setting_changed
        assert ds_settings.MAX_CHUNK_SIZE == 1


def test_other_settings_changing_keep_the_cache():
    assert ds_settings.MAX_CHUNK_SIZE
    cached = Settings._cache
    with override_settings(USE_I18N=False):
        assert Settings._cache is cached


def test_unknown_setting_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="NOPE"):
        ds_settings.NOPE  # noqa: B018


def test_unknown_keys_are_listed():
    with override_settings(
        DURABLE_STREAMS={"LONG_POLL_TIMEOUT": 1, "LONG_POLL_TIMEOUTS": 2, "x": 3}
    ):
        assert ds_settings.unknown_keys() == ["LONG_POLL_TIMEOUTS", "x"]


# --- checks --------------------------------------------------------------------------------


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_checks_pass_with_the_test_settings():
    assert checks.check_database() == []
    assert checks.check_asgi() == []
    assert checks.check_settings() == []


def test_e001_database_alias_not_in_databases():
    with override_settings(DURABLE_STREAMS={"DATABASE_ALIAS": "missing"}):
        assert ids(checks.check_database()) == ["durable_streams.E001"]


def test_e002_non_postgres_database(monkeypatch):
    fake = {"default": types.SimpleNamespace(vendor="sqlite")}
    monkeypatch.setattr(checks, "connections", fake)
    messages = checks.check_database()
    assert ids(messages) == ["durable_streams.E002"]
    assert "sqlite" in messages[0].msg


@pytest.mark.parametrize("value", [None, ""])
def test_w003_missing_asgi_application_is_a_warning_that_does_not_block_migrate(value):
    # uvicorn and granian take the application on their command line.
    apps = [a for a in settings.INSTALLED_APPS if a != "daphne"]
    with override_settings(ASGI_APPLICATION=value, INSTALLED_APPS=apps):
        messages = checks.check_asgi()
    assert ids(messages) == ["durable_streams.W003"]
    assert messages[0].level == django_checks.WARNING


def test_e003_daphne_runserver_without_asgi_application():
    apps = [*(a for a in settings.INSTALLED_APPS if a != "daphne"), "daphne"]
    with override_settings(INSTALLED_APPS=apps):
        del settings.ASGI_APPLICATION
        assert ids(checks.check_asgi()) == ["durable_streams.E003"]


def test_no_asgi_message_when_asgi_application_is_set():
    with override_settings(ASGI_APPLICATION="example_project.asgi.application"):
        assert checks.check_asgi() == []


def test_w001_unknown_setting_key():
    with override_settings(DURABLE_STREAMS={"LONG_POLL_TIMEOUTT": 5}):
        messages = checks.check_settings()
    assert ids(messages) == ["durable_streams.W001"]
    assert "LONG_POLL_TIMEOUTT" in messages[0].msg


@pytest.mark.parametrize(
    "key", ["LONG_POLL_TIMEOUT", "SSE_MAX_DURATION", "MAX_CHUNK_SIZE", "MAX_APPEND_SIZE"]
)
@pytest.mark.parametrize("value", [0, -1, "30", None])
def test_e004_non_positive_or_non_numeric_values(key, value):
    with override_settings(DURABLE_STREAMS={key: value}):
        messages = checks.check_settings()
    assert ids(messages) == ["durable_streams.E004"]
    assert key in messages[0].msg


def test_checks_run_through_the_check_framework():
    from django.core import checks as django_checks

    apps = [a for a in settings.INSTALLED_APPS if a != "daphne"]
    with override_settings(
        ASGI_APPLICATION=None, INSTALLED_APPS=apps, DURABLE_STREAMS={"BOGUS": 1}
    ):
        found = ids(django_checks.run_checks())
    assert "durable_streams.W003" in found
    assert "durable_streams.W001" in found


# --- every key is converted and checked ----------------------------------------------------


def test_every_default_passes_its_own_check():
    with override_settings(DURABLE_STREAMS={}):
        assert ds_settings.problems() == []


BAD_VALUES = {
    "LONG_POLL_TIMEOUT": float("nan"),
    "SSE_MAX_DURATION": True,
    "SSE_KEEPALIVE_INTERVAL": -0.5,
    "MAX_CHUNK_SIZE": 1.5,
    "MAX_APPEND_SIZE": "64MB",
    "CACHE_CONTROL": None,
    "CORS_ALLOWED_ORIGINS": "*",
    "CROSS_ORIGIN_RESOURCE_POLICY": 1,
    "DATABASE_ALIAS": "",
    "NOTIFY_CHANNEL": None,
    "DB_POOL_SIZE": 0,
    "DB_POOL_TIMEOUT": 0,
    "DB_THREADS": "4",
    "CURSOR_INTERVAL": 0,
    "CURSOR_EPOCH": "2024-10-09",
    "STATE_TXID_HEADER": "",
    "GROUP_COMMIT_INFLIGHT": 0,
    "GROUP_COMMIT_MAX_BATCH": -1,
    "FALLBACK_POLL_INTERVAL": 0,
    "POLICY": 42,
    "DRF_RULES": {"prefix": ""},
    "ADMIN_READS": "yes",
    "CORS_ALLOW_CREDENTIALS": "yes",
    "SUBSCRIPTIONS_IN_SERVER": "no",
    "API_AUTHENTICATION_CLASSES": "rest_framework.authentication.SessionAuthentication",
    "API_PERMISSION_CLASSES": None,
    "AI_WRITER_LINGER": -0.01,
    "AI_WRITER_BATCH_SIZE": 0,
    "AI_WRITER_RETRIES": 1.5,
    "WEBHOOK_ALLOW_LOCALHOST": "yes",
    "WEBHOOK_TIMEOUT": 0,
    "WEBHOOK_REPLAY_WINDOW": -5,
    "PROXY_ALLOWED_UPSTREAMS": "https://api.openai.com/v1/",
    "PROXY_SECRET": 123,
    "PROXY_URL_EXPIRES": 0,
    "PROXY_STREAM_TTL": -1,
    "PROXY_HEADER_TIMEOUT": "60",
    "PROXY_IDLE_TIMEOUT": 0,
    "PROXY_MAX_ERROR_BODY": 0.5,
    "PROXY_MAX_REQUEST_BODY": None,
    "PROXY_STREAM_PREFIX": "/proxy",
    "PROXY_LINGER": -1,
    "PROXY_BATCH_BYTES": 0,
    "PROXY_ALLOW_LOCALHOST": "1",
}


def test_every_key_has_a_bad_value_case():
    assert set(BAD_VALUES) == set(DEFAULTS)


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_every_key_is_checked_with_an_id_and_a_hint(key):
    with override_settings(DURABLE_STREAMS={key: BAD_VALUES[key]}):
        (message,) = checks.check_settings()
        assert message.id in ("durable_streams.E004", "durable_streams.E005")
        assert key in message.msg and "Default:" in message.hint
        with pytest.raises(ImproperlyConfigured, match=key):
            getattr(ds_settings, key)


def test_values_are_converted_once_to_the_type_callers_use():
    with override_settings(
        DURABLE_STREAMS={
            "LONG_POLL_TIMEOUT": 5,
            "MAX_CHUNK_SIZE": 2048.0,
            "CORS_ALLOWED_ORIGINS": (),
        }
    ):
        assert ds_settings.LONG_POLL_TIMEOUT == 5.0 and isinstance(
            ds_settings.LONG_POLL_TIMEOUT, float
        )
        assert ds_settings.MAX_CHUNK_SIZE == 2048 and isinstance(ds_settings.MAX_CHUNK_SIZE, int)
        assert ds_settings.CORS_ALLOWED_ORIGINS == []


def test_a_setting_that_is_not_a_dict_is_an_error():
    with override_settings(DURABLE_STREAMS=["LONG_POLL_TIMEOUT", 5]):
        assert ids(checks.check_settings()) == ["durable_streams.E005"]
        assert ds_settings.LONG_POLL_TIMEOUT == DEFAULTS["LONG_POLL_TIMEOUT"]
