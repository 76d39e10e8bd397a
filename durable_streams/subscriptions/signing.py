"""Ed25519 webhook signatures and the server's signing keys (spec 6.5, 7.1, 12.10).

Each webhook request carries ``Webhook-Signature: t=<unix seconds>,kid=<key id>,
ed25519=<unpadded base64url signature>``, the signature over the bytes
``<t>.<raw body>``. The keys live in the database (:class:`WebhookSigningKey`),
so every server process and ``streams deliver`` worker signs with the same key
and a restart changes nothing; receivers find the public keys in the JWK Set
served at ``{stream root}/__ds/jwks.json`` (:func:`jwks`).

``kid`` is ``"ds_"`` followed by the key's RFC 7638 JWK thumbprint (SHA-256 of
the canonical ``{"crv","kty","x"}`` JSON), so it is stable for the key's life and
derived from the key material.

Rotation (:func:`rotate`) retires the active key and creates a new one. A
process may keep signing with the key it loaded for up to
:data:`KEY_CACHE_SECONDS`, and a receiver accepts a signature for the replay
window (``WEBHOOK_REPLAY_WINDOW``, default 300 s) after its ``t``, so a retired
key stays in the JWK Set for the sum of both after its retirement; rotation
deletes retired keys older than that.

The private keys are stored unencrypted in the database: whoever can read the
table can sign webhooks. Admin pages never show them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from django.db import connections, models, transaction
from django.utils import timezone

from ..conf import ds_settings

# How long a process reuses the active key it loaded before asking the database again.
KEY_CACHE_SECONDS = 60
DEFAULT_REPLAY_WINDOW = 300
# pg_advisory_xact_lock key serialising the creation of the first key and rotations.
_KEY_LOCK = 0x64735F6B6579  # "ds_key"


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE and the signature header use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def replay_window() -> int:
    """Seconds a signature's timestamp stays acceptable (``WEBHOOK_REPLAY_WINDOW``)."""
    return ds_settings.WEBHOOK_REPLAY_WINDOW


def public_x(public_key: Ed25519PublicKey) -> str:
    return b64url(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def thumbprint_kid(x: str) -> str:
    """``ds_`` + the RFC 7638 thumbprint of the Ed25519 public key ``x``."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return "ds_" + b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(x: str) -> dict:
    """The JWK (RFC 8037 OKP) receivers verify with."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": thumbprint_kid(x),
        "use": "sig",
        "alg": "EdDSA",
    }


@dataclass(frozen=True)
class SigningKey:
    """A loaded private key and its id."""

    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        private_key = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(thumbprint_kid(public_x(private_key.public_key())), private_key)

    def sign(self, body: bytes, timestamp: int | None = None) -> str:
        """The ``Webhook-Signature`` header value for ``body`` at ``timestamp``."""
        t = int(time.time()) if timestamp is None else int(timestamp)
        signature = self.private_key.sign(str(t).encode("ascii") + b"." + body)
        return f"t={t},kid={self.kid},ed25519={b64url(signature)}"


class WebhookSigningKey(models.Model):
    """One Ed25519 webhook signing key. The newest key without ``retired_at`` signs."""

    kid = models.CharField(max_length=64, unique=True)
    # The 32-byte private seed: secret, never serialized to clients or the admin.
    seed = models.BinaryField()
    x = models.CharField(max_length=64, help_text="Public key, base64url")
    created_at = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "durable_streams"
        db_table = "durable_streams_webhook_signing_key"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.kid

    def signing_key(self) -> SigningKey:
        return SigningKey.from_seed(bytes(self.seed))


def _alias() -> str:
    return ds_settings.DATABASE_ALIAS


def _new_key_row(now: dt.datetime) -> WebhookSigningKey:
    private_key = Ed25519PrivateKey.generate()
    x = public_x(private_key.public_key())
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return WebhookSigningKey.objects.using(_alias()).create(
        kid=thumbprint_kid(x), seed=seed, x=x, created_at=now
    )


def _lock() -> None:
    with connections[_alias()].cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_KEY_LOCK])


def _active_row() -> WebhookSigningKey | None:
    return WebhookSigningKey.objects.using(_alias()).filter(retired_at__isnull=True).first()


_cache_lock = threading.Lock()
_cached: tuple[float, SigningKey] | None = None


def active_key() -> SigningKey:
    """The key that signs now, created on first use. Sync: runs a query at most
    every :data:`KEY_CACHE_SECONDS` per process."""
    global _cached
    with _cache_lock:
        if _cached is not None and time.monotonic() - _cached[0] < KEY_CACHE_SECONDS:
            return _cached[1]
    row = _active_row()
    if row is None:
        with transaction.atomic(using=_alias()):
            _lock()
            row = _active_row() or _new_key_row(timezone.now())
    key = row.signing_key()
    with _cache_lock:
        _cached = (time.monotonic(), key)
    return key


def forget_cached_key() -> None:
    """Drop this process's cached key (after a rotation in this process, in tests)."""
    global _cached
    with _cache_lock:
        _cached = None


def active_kid() -> str:
    """The id of the key that signs now (the ``webhook.signing.kid`` metadata)."""
    return active_key().kid


def _publish_horizon(now: dt.datetime) -> dt.datetime:
    """Keys retired before this instant can no longer sign an acceptable delivery."""
    return now - dt.timedelta(seconds=replay_window() + KEY_CACHE_SECONDS)


def jwks(now: dt.datetime | None = None) -> dict:
    """The JWK Set: the active key and every retired key still inside the horizon."""
    active_key()  # the set is never empty
    now = now or timezone.now()
    rows = WebhookSigningKey.objects.using(_alias()).filter(
        models.Q(retired_at__isnull=True) | models.Q(retired_at__gt=_publish_horizon(now))
    )
    return {"keys": [public_jwk(row.x) for row in rows]}


def rotate(now: dt.datetime | None = None) -> tuple[str, list[str]]:
    """Retire the active key, create its successor and delete keys past the horizon.

    Returns the new ``kid`` and the ``kid`` values deleted. Other processes pick
    the new key up within :data:`KEY_CACHE_SECONDS`.
    """
    now = now or timezone.now()
    keys = WebhookSigningKey.objects.using(_alias())
    with transaction.atomic(using=_alias()):
        _lock()
        keys.filter(retired_at__isnull=True).update(retired_at=now)
        new = _new_key_row(now)
        expired = keys.filter(retired_at__lte=_publish_horizon(now))
        deleted = list(expired.values_list("kid", flat=True))
        expired.delete()
    forget_cached_key()
    return new.kid, deleted
