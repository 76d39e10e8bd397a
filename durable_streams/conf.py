"""The ``DURABLE_STREAMS`` setting, read lazily and merged with defaults.

Every key is documented in the README's settings reference. The merged dict is
cached and dropped whenever Django's ``setting_changed`` signal fires, so
``override_settings(DURABLE_STREAMS=...)`` works in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Seconds a long-poll request waits for new data before answering 204.
    "LONG_POLL_TIMEOUT": 30.0,
    # Seconds after which the server ends an SSE response (spec 10.2: ~60 s).
    "SSE_MAX_DURATION": 60.0,
    # Seconds between SSE keep-alive comments while no data flows.
    "SSE_KEEPALIVE_INTERVAL": 15.0,
    # Largest body of one catch-up response, in bytes; longer reads are split.
    "MAX_CHUNK_SIZE": 4 * 1024 * 1024,
    # Largest accepted PUT/POST body, in bytes; larger ones answer 413.
    "MAX_APPEND_SIZE": 64 * 1024 * 1024,
    # Cache-Control of catch-up and long-poll 200 responses (spec section 10.1).
    "CACHE_CONTROL": "public, max-age=60, stale-while-revalidate=300",
    # Origins allowed by CORS; ["*"] allows any origin, [] disables CORS headers.
    "CORS_ALLOWED_ORIGINS": ["*"],
    # Value of the Cross-Origin-Resource-Policy header (spec 12.7).
    "CROSS_ORIGIN_RESOURCE_POLICY": "cross-origin",
    # Database alias that holds the stream tables.
    "DATABASE_ALIAS": "default",
    # Postgres NOTIFY channel used to wake live readers in every process.
    "NOTIFY_CHANNEL": "durable_streams",
    # Connections of the async pool that serves the views, per process.
    "DB_POOL_SIZE": 8,
    # Threads that run blocking work (policies, the async API twins).
    "DB_THREADS": 4,
    # Live-read cursor interval in seconds and its epoch (spec 10.1).
    "CURSOR_INTERVAL": 20,
    "CURSOR_EPOCH": 1728432000,  # 2024-10-09T00:00:00Z
    # Request header that carries the txid stamped on model change events
    # (durable_streams.state.TxidMiddleware); echoed on the response.
    "STATE_TXID_HEADER": "X-Txid",
    # Group commit: concurrent appends share transactions. Batches in flight
    # at once per process, and the most appends one transaction takes.
    "GROUP_COMMIT_INFLIGHT": 1,
    "GROUP_COMMIT_MAX_BATCH": 256,
    # While the notification listener is down, waiting readers re-read this often.
    "FALLBACK_POLL_INTERVAL": 1.0,
    # Access control (durable_streams.permissions): a Policy subclass (dotted
    # path or class); None means DRFPolicy if DRF_RULES is set, else allow
    # everything only while DEBUG is on.
    "POLICY": None,
    # [{"prefix": ..., "authentication_classes": [...], "permission_classes": [...],
    #   "public": bool}]: DRF classes per stream path prefix, longest prefix wins.
    "DRF_RULES": [],
    # Staff with the view_stream permission may read any stream by its URL (admin live tail).
    "ADMIN_READS": True,
    # DRF classes guarding the JSON metadata API (None: the project's DRF defaults).
    "API_AUTHENTICATION_CLASSES": None,
    "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
}


class Settings:
    """Attribute access to ``DURABLE_STREAMS`` merged over :data:`DEFAULTS`."""

    _cache: dict[str, Any] | None = None

    def _merged(self) -> dict[str, Any]:
        if self._cache is None:
            user = getattr(settings, "DURABLE_STREAMS", None) or {}
            merged = {**DEFAULTS, **user}
            self.__class__._cache = merged
        return self._cache  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        merged = self._merged()
        try:
            return merged[name]
        except KeyError:
            raise AttributeError(f"Unknown DURABLE_STREAMS setting {name!r}") from None

    def unknown_keys(self) -> list[str]:
        user = getattr(settings, "DURABLE_STREAMS", None) or {}
        return sorted(set(user) - set(DEFAULTS))

    @classmethod
    def reset(cls) -> None:
        cls._cache = None


ds_settings = Settings()


@receiver(setting_changed)
def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "DURABLE_STREAMS":
        Settings.reset()
