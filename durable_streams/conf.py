"""The ``DURABLE_STREAMS`` setting: every key with its default and its type.

Read lazily and merged over the defaults; each value is converted once (so
callers get a ``float`` of seconds, an ``int`` of bytes, ...) and cached. The
cache is dropped whenever Django's ``setting_changed`` signal fires, so
``override_settings(DURABLE_STREAMS=...)`` works in tests. A value that does
not convert is reported by the system checks (:mod:`durable_streams.checks`)
and raises :class:`~django.core.exceptions.ImproperlyConfigured` if read.
Every key is documented in the README's settings reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

# --- converters: return the value to use, or raise ValueError("must be ...") -------------------


def _positive_number(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError("must be a positive number")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


def _positive_integer(value: Any) -> int:
    try:
        number = _integer(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _non_negative_number(value: Any) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    try:
        return _positive_number(value)
    except ValueError:
        raise ValueError("must be a number, 0 or more") from None


def _non_negative_integer(value: Any) -> int:
    if value == 0 and not isinstance(value, bool):
        return 0
    try:
        return _positive_integer(value)
    except ValueError:
        raise ValueError("must be an integer, 0 or more") from None


_NUMBERS = (
    _positive_number,
    _positive_integer,
    _integer,
    _non_negative_number,
    _non_negative_integer,
)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be True or False")
    return value


def _optional_flag(value: Any) -> bool | None:
    return None if value is None else _flag(value)


def _strings(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return list(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _relative_prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.endswith("/") or value.startswith("/"):
        raise ValueError("must be a relative path ending in '/'")
    return value


def _class_or_path(value: Any) -> bool:
    return isinstance(value, (str, type))


def _policy(value: Any) -> Any:
    if value is not None and not _class_or_path(value):
        raise ValueError("must be None, a dotted path or a Policy subclass")
    return value


def _classes(value: Any) -> list:
    if not isinstance(value, (list, tuple)) or not all(_class_or_path(v) for v in value):
        raise ValueError("must be a list of classes or dotted paths")
    return list(value)


def _optional_classes(value: Any) -> list | None:
    return None if value is None else _classes(value)


def _list(value: Any) -> list:
    # The items' shape is checked where they are used (DRF rules: permissions.compile_rules).
    if not isinstance(value, (list, tuple)):
        raise ValueError("must be a list")
    return list(value)


# --- the keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key of ``DURABLE_STREAMS``."""

    default: Any
    convert: Callable[[Any], Any]
    doc: str


KEYS: dict[str, Key] = {
    "LONG_POLL_TIMEOUT": Key(
        30.0, _positive_number, "Seconds a long-poll request waits for new data before a 204."
    ),
    "SSE_MAX_DURATION": Key(
        60.0, _positive_number, "Seconds after which the server ends an SSE response (spec 10.2)."
    ),
    "SSE_KEEPALIVE_INTERVAL": Key(
        15.0, _positive_number, "Seconds between SSE keep-alive comments while no data flows."
    ),
    "MAX_CHUNK_SIZE": Key(
        4 * 1024 * 1024,
        _positive_integer,
        "Largest body of one catch-up response, in bytes; longer reads are split.",
    ),
    "MAX_APPEND_SIZE": Key(
        64 * 1024 * 1024,
        _positive_integer,
        "Largest accepted PUT/POST body, in bytes; larger ones answer 413.",
    ),
    "CACHE_CONTROL": Key(
        "public, max-age=60, stale-while-revalidate=300",
        _text,
        "Cache-Control of catch-up and long-poll 200 responses (spec 10.1).",
    ),
    "CORS_ALLOWED_ORIGINS": Key(
        ["*"], _strings, 'Origins allowed by CORS; ["*"] allows any, [] sends no CORS headers.'
    ),
    "CORS_ALLOW_CREDENTIALS": Key(
        False,
        _flag,
        "Let browsers send cookies from the origins CORS_ALLOWED_ORIGINS lists by name "
        '(never from "*").',
    ),
    "CROSS_ORIGIN_RESOURCE_POLICY": Key(
        "cross-origin", _text, "Value of the Cross-Origin-Resource-Policy header (spec 12.7)."
    ),
    "DATABASE_ALIAS": Key("default", _name, "Database alias that holds the stream tables."),
    "NOTIFY_CHANNEL": Key(
        "durable_streams", _name, "Postgres NOTIFY channel that wakes live readers."
    ),
    "DB_POOL_SIZE": Key(
        8, _positive_integer, "Connections of the async pool that serves the views, per process."
    ),
    "DB_POOL_TIMEOUT": Key(
        5.0,
        _positive_number,
        "Seconds a request waits for a busy pool connection before it answers 503; "
        "once the database is known to be down, 503 comes within 0.5 s.",
    ),
    "DB_THREADS": Key(
        4, _positive_integer, "Threads that run blocking work (sync access policies)."
    ),
    "CURSOR_INTERVAL": Key(
        20, _positive_integer, "Live-read cursor interval in seconds (spec 10.1)."
    ),
    "CURSOR_EPOCH": Key(
        1728432000, _integer, "Unix time the cursor intervals count from (2024-10-09T00:00:00Z)."
    ),
    "STATE_TXID_HEADER": Key(
        "X-Txid", _name, "Request header that carries the txid of model change events."
    ),
    "GROUP_COMMIT_INFLIGHT": Key(
        1, _positive_integer, "Group-commit transactions in flight at once per process."
    ),
    "GROUP_COMMIT_MAX_BATCH": Key(
        256, _positive_integer, "Most appends one group-commit transaction takes."
    ),
    "FALLBACK_POLL_INTERVAL": Key(
        1.0,
        _positive_number,
        "Seconds between re-reads of waiting readers while the listener is down.",
    ),
    "POLICY": Key(
        None,
        _policy,
        "Access policy: a durable_streams.permissions.Policy subclass (dotted path or class);"
        " None: DRFPolicy if DRF_RULES is set, else allow everything only while DEBUG is on.",
    ),
    "DRF_RULES": Key(
        [],
        _list,
        'DRF classes per stream path prefix: [{"prefix", "authentication_classes",'
        ' "permission_classes", "public"}], longest prefix wins.',
    ),
    "ADMIN_READS": Key(
        True, _flag, "Staff with view_stream may read any stream by its URL (admin live tail)."
    ),
    "API_AUTHENTICATION_CLASSES": Key(
        None,
        _optional_classes,
        "DRF authentication classes of the JSON API (None: the project's DRF defaults).",
    ),
    "API_PERMISSION_CLASSES": Key(
        ["rest_framework.permissions.IsAdminUser"],
        _classes,
        "DRF permission classes of the JSON metadata API.",
    ),
    "AI_WRITER_LINGER": Key(
        0.05, _non_negative_number, "Seconds the AI token writer buffers chunks before an append."
    ),
    "AI_WRITER_BATCH_SIZE": Key(
        64, _positive_integer, "Most chunks one append of the AI token writer carries."
    ),
    "AI_WRITER_RETRIES": Key(
        3, _non_negative_integer, "Retries of an AI token writer append after a transient error."
    ),
    "WEBHOOK_ALLOW_LOCALHOST": Key(
        None,
        _optional_flag,
        "Webhooks to localhost/loopback (development); None follows settings.DEBUG.",
    ),
    "WEBHOOK_TIMEOUT": Key(
        10.0, _positive_number, "Seconds one webhook request may take, answer included."
    ),
    "WEBHOOK_REPLAY_WINDOW": Key(
        300,
        _positive_integer,
        "Seconds a webhook signature is accepted; retired keys stay published.",
    ),
    "SUBSCRIPTIONS_IN_SERVER": Key(
        True,
        _flag,
        "Run the subscription engine (wakes, lease expiry, webhook sends) in every server"
        " process's event loop; False leaves it to `manage.py streams deliver`.",
    ),
    # The durable proxy (durable_streams.proxy, docs/proxy.md).
    "PROXY_ALLOWED_UPSTREAMS": Key(
        [], _strings, "Upstream URL prefixes the proxy may forward to; [] refuses every upstream."
    ),
    "PROXY_SECRET": Key(
        None,
        _optional_text,
        "Proxy service secret and capability-URL signing key; None answers 401 to everything.",
    ),
    "PROXY_URL_EXPIRES": Key(
        24 * 3600, _positive_integer, "Lifetime of a proxy capability URL, in seconds."
    ),
    "PROXY_STREAM_TTL": Key(
        24 * 3600, _positive_integer, "TTL of the streams the proxy creates, in seconds."
    ),
    "PROXY_HEADER_TIMEOUT": Key(
        60.0, _positive_number, "Seconds the proxy waits for upstream headers (504 after)."
    ),
    "PROXY_IDLE_TIMEOUT": Key(
        600.0, _positive_number, "Seconds without an upstream byte before piping stops."
    ),
    "PROXY_MAX_ERROR_BODY": Key(
        64 * 1024, _positive_integer, "Bytes of an upstream error body passed on with a 502."
    ),
    "PROXY_MAX_REQUEST_BODY": Key(
        10 * 1024 * 1024, _positive_integer, "Largest request body the proxy forwards (413)."
    ),
    "PROXY_STREAM_PREFIX": Key(
        "proxy/", _relative_prefix, "Path prefix of the streams the proxy creates."
    ),
    "PROXY_LINGER": Key(
        0.05, _non_negative_number, "Seconds a batch of upstream chunks may wait before an append."
    ),
    "PROXY_BATCH_BYTES": Key(
        4096, _positive_integer, "Batch bound of piping, in units of 64 bytes of upstream reads."
    ),
    "PROXY_ALLOW_LOCALHOST": Key(
        None,
        _optional_flag,
        "SSRF development exception: upstreams on loopback; None follows DEBUG.",
    ),
}

DEFAULTS: dict[str, Any] = {name: key.default for name, key in KEYS.items()}


@dataclass(frozen=True)
class Problem:
    """A value of ``DURABLE_STREAMS`` that does not convert."""

    key: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"DURABLE_STREAMS[{self.key!r}] {self.message}, not {self.value!r}."

    @property
    def numeric(self) -> bool:
        """A number out of range (E004), rather than a value of the wrong type (E005)."""
        return KEYS[self.key].convert in _NUMBERS

    @property
    def hint(self) -> str:
        key = KEYS[self.key]
        return f"{key.doc} Default: {key.default!r}."


class Settings:
    """Attribute access to ``DURABLE_STREAMS`` merged over the defaults, converted."""

    _cache: dict[str, Any] | None = None
    _problems: dict[str, Problem] = {}

    @staticmethod
    def _user() -> Mapping:
        user = getattr(settings, "DURABLE_STREAMS", None) or {}
        return user if isinstance(user, Mapping) else {}

    def _merged(self) -> dict[str, Any]:
        if self._cache is None:
            merged: dict[str, Any] = {}
            problems: dict[str, Problem] = {}
            user = self._user()
            for name, key in KEYS.items():
                value = user.get(name, key.default)
                try:
                    merged[name] = key.convert(value)
                except ValueError as exc:
                    problems[name] = Problem(name, value, str(exc))
            self.__class__._problems = problems
            self.__class__._cache = merged
        return self._cache  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        # Read on every request, several times: the cached value in one call.
        merged = self._cache
        if merged is None:
            merged = self._merged()
        try:
            return merged[name]
        except KeyError:
            if name in self._problems:
                raise ImproperlyConfigured(str(self._problems[name])) from None
            raise AttributeError(f"Unknown DURABLE_STREAMS setting {name!r}") from None

    def problems(self) -> list[Problem]:
        """The values that do not convert, in key order."""
        self._merged()
        return list(self._problems.values())

    def is_mapping(self) -> bool:
        """Whether ``DURABLE_STREAMS`` is a dict (or unset)."""
        user = getattr(settings, "DURABLE_STREAMS", None)
        return user is None or isinstance(user, Mapping)

    def unknown_keys(self) -> list[str]:
        return sorted(set(self._user()) - set(KEYS))

    @classmethod
    def reset(cls) -> None:
        cls._cache = None
        cls._problems = {}


ds_settings = Settings()


@receiver(setting_changed)
def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "DURABLE_STREAMS":
        Settings.reset()
