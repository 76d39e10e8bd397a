"""The DURABLE_STREAMS setting (lazy, merged, reset on change) and system checks."""

from __future__ import annotations

import types

import pytest
from django.conf import settings
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
def test_e003_missing_asgi_application(value):
    with override_settings(ASGI_APPLICATION=value):
        assert ids(checks.check_asgi()) == ["durable_streams.E003"]


def test_e003_asgi_application_not_set_at_all():
    with override_settings():
        del settings.ASGI_APPLICATION
        assert ids(checks.check_asgi()) == ["durable_streams.E003"]


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

    with override_settings(ASGI_APPLICATION=None, DURABLE_STREAMS={"BOGUS": 1}):
        found = ids(django_checks.run_checks())
    assert "durable_streams.E003" in found
    assert "durable_streams.W001" in found
