"""Webhook URL rules against server-side request forgery (spec 6.2 and 12.8).

The address rules themselves (public addresses only, every resolved address
checked, the checked address connected, the loopback-only development
exception) live in :mod:`durable_streams.ssrf`, shared with every outbound
request. This module adds what is particular to webhooks:

* :func:`check_webhook_url` runs when a subscription is created and before each
  delivery: an ``https://`` URL with a host, no credentials, and no local
  address named literally (``10.0.0.1``, ``[::1]``, ``169.254.169.254``,
  ``localhost``...);
* :func:`backend` is the network backend deliveries connect through (the check
  after DNS resolution). Deliveries never follow redirects (:mod:`.webhooks`).

The development exception: while :func:`localhost_allowed` is true, URLs whose
host is ``localhost`` (or ``*.localhost``) or a loopback literal (``127.0.0.x``,
``[::1]``) are accepted over ``http://`` or ``https://`` and may connect to
loopback addresses, and only to those. It is decided by the setting
``DURABLE_STREAMS["WEBHOOK_ALLOW_LOCALHOST"]``: ``None`` (the default) follows
``settings.DEBUG``; ``True`` or ``False`` decides explicitly (test servers that
run with ``DEBUG`` off but deliver to a receiver on loopback set it ``True``).
Private network targets are never allowed, in development either.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from .. import ssrf as rules
from ..conf import ds_settings

MAX_URL_LENGTH = 2048


class UnsafeWebhookURL(rules.UnsafeURL):
    """A webhook URL the SSRF rules refuse (``400 WEBHOOK_URL_REJECTED``)."""


def localhost_allowed() -> bool:
    """Whether the development exception for loopback receivers is on."""
    value = ds_settings.WEBHOOK_ALLOW_LOCALHOST
    return bool(settings.DEBUG) if value is None else bool(value)


def check_webhook_url(url: str) -> str:
    """Return ``url`` if it may be a subscription's webhook URL; raise
    :class:`UnsafeWebhookURL` with a short reason otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookURL(f"webhook.url must be a URL of at most {MAX_URL_LENGTH} characters")
    if any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        raise UnsafeWebhookURL("webhook.url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise UnsafeWebhookURL("webhook.url must be a valid URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        raise UnsafeWebhookURL("webhook.url must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookURL("webhook.url must not carry credentials")
    if port == 0:
        raise UnsafeWebhookURL("webhook.url must not use port 0")
    allow_localhost = localhost_allowed()
    try:
        rules.check_host(host, allow_localhost=allow_localhost)
    except rules.UnsafeURL as exc:
        raise UnsafeWebhookURL(f"webhook.url: {exc}") from None
    if scheme != "https" and not (allow_localhost and rules.is_local_dev_host(host)):
        raise UnsafeWebhookURL(
            "webhook.url must use https (http only for localhost in development)"
        )
    return url


def backend() -> rules.GuardedBackend:
    """The network backend webhook deliveries connect through."""
    return rules.GuardedBackend(localhost_allowed)
