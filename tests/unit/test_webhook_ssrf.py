"""Webhook URL rules against SSRF (spec 6.2, 12.8): at creation, after DNS, on redirects."""

from __future__ import annotations

import ipaddress

import pytest
from django.test import override_settings

from durable_streams import ssrf as rules
from durable_streams.subscriptions import ssrf

from .webhook_receiver import LoopbackReceiver

PRODUCTION = {"DEBUG": False, "DURABLE_STREAMS": {}}
DEVELOPMENT = {"DEBUG": True, "DURABLE_STREAMS": {}}


async def resolve(host: str, port: int) -> list[str]:
    """What a delivery's connection does first: resolve, then check every address."""
    return await rules.resolve(host, port, allow_localhost=ssrf.localhost_allowed())


def allowed(host: str, ip) -> bool:
    return rules.address_allowed(host, ip, allow_localhost=ssrf.localhost_allowed())


def refused(url: str) -> str:
    with pytest.raises(ssrf.UnsafeWebhookURL) as info:
        ssrf.check_webhook_url(url)
    return str(info.value)


@override_settings(**PRODUCTION)
def test_production_accepts_public_https_urls():
    for url in (
        "https://worker.example/hooks",
        "https://worker.example:8443/a/b?c=d",
        "https://93.184.216.34/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
    ):
        assert ssrf.check_webhook_url(url) == url


@override_settings(**PRODUCTION)
def test_production_requires_https():
    assert "https" in refused("http://worker.example/hooks")
    assert "https" in refused("ftp://worker.example/hooks")
    assert "https" in refused("worker.example/hooks")


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",  # RFC 1918
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",  # link-local, cloud metadata
        "169.254.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "[fd00::1]",  # unique local
        "[fe80::1]",  # link-local
        "[::ffff:10.0.0.1]",  # IPv4-mapped private
        "[::ffff:169.254.169.254]",
    ],
)
@override_settings(**PRODUCTION)
def test_private_link_local_and_metadata_literals_are_refused(host):
    assert "private" in refused(f"https://{host}/hook")


@pytest.mark.parametrize("settings_", [PRODUCTION, DEVELOPMENT])
def test_private_addresses_are_refused_in_development_too(settings_):
    with override_settings(**settings_):
        for url in ("http://10.0.0.1/hook", "https://192.168.0.10/hook", "http://169.254.169.254/"):
            refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook",
        "http://localhost:8080/hook",
        "https://localhost/hook",
        "http://api.localhost/hook",
        "http://127.0.0.1:9000/hook",
        "http://127.0.0.42/hook",
        "http://[::1]:9000/hook",
    ],
)
def test_loopback_only_in_development(url):
    with override_settings(**PRODUCTION):
        assert "localhost" in refused(url)
    with override_settings(**DEVELOPMENT):
        assert ssrf.check_webhook_url(url) == url


def test_development_is_the_setting_or_else_debug():
    url = "http://127.0.0.1:9000/hook"
    with override_settings(DEBUG=False, DURABLE_STREAMS={"WEBHOOK_ALLOW_LOCALHOST": True}):
        assert ssrf.localhost_allowed()
        assert ssrf.check_webhook_url(url) == url
    with override_settings(DEBUG=True, DURABLE_STREAMS={"WEBHOOK_ALLOW_LOCALHOST": False}):
        assert not ssrf.localhost_allowed()
        refused(url)
    with override_settings(DEBUG=True, DURABLE_STREAMS={"WEBHOOK_ALLOW_LOCALHOST": None}):
        assert ssrf.localhost_allowed()


@override_settings(**DEVELOPMENT)
def test_http_is_only_for_local_hosts_in_development():
    assert "https" in refused("http://worker.example/hooks")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "https://",
        "https:///path",
        "https://user:secret@worker.example/hook",
        "https://worker.example:99999/hook",
        "https://worker.example:0/hook",
        "https://worker.example/ho ok",
        "https://worker.example/\nhook",
        "https://worker.example/" + "a" * 2100,
    ],
)
@override_settings(**PRODUCTION)
def test_malformed_urls_are_refused(url):
    refused(url)


@pytest.mark.parametrize(
    ("host", "resolves_to"),
    [
        ("2130706433", "127.0.0.1"),  # decimal IPv4: not a literal to ipaddress, one to DNS
        ("0x7f.1", "127.0.0.1"),
        ("167772161", "10.0.0.1"),
        ("2852039166", "169.254.169.254"),
    ],
)
async def test_names_resolving_to_local_addresses_are_refused_after_resolution(host, resolves_to):
    with override_settings(**PRODUCTION):
        # Looks like a host name, so the creation-time check lets it through...
        assert ssrf.check_webhook_url(f"https://{host}/hook")
        # ...but every address it resolves to is checked before connecting.
        with pytest.raises(rules.UnsafeURL, match=resolves_to):
            await resolve(host, 443)
    with override_settings(**DEVELOPMENT):
        # The development exception covers names that say they are local, no others.
        with pytest.raises(rules.UnsafeURL):
            await resolve(host, 443)


async def test_localhost_resolves_to_loopback_only_in_development():
    with override_settings(**DEVELOPMENT):
        addresses = await resolve("localhost", 80)
        assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    with override_settings(**PRODUCTION):
        with pytest.raises(rules.UnsafeURL):
            await resolve("localhost", 80)


def test_public_addresses_are_allowed_for_any_host():
    with override_settings(**PRODUCTION):
        assert allowed("worker.example", ipaddress.ip_address("93.184.216.34"))
        assert not allowed("worker.example", ipaddress.ip_address("127.0.0.1"))
    with override_settings(**DEVELOPMENT):
        assert allowed("localhost", ipaddress.ip_address("127.0.0.1"))
        assert not allowed("worker.example", ipaddress.ip_address("127.0.0.1"))
        assert not allowed("localhost", ipaddress.ip_address("10.1.2.3"))


async def test_delivery_connects_only_to_checked_addresses():
    """A URL that passes the creation check but resolves to loopback is never contacted."""
    from durable_streams.subscriptions import signing, webhooks

    key = signing.SigningKey.from_seed(bytes(32))
    with LoopbackReceiver() as receiver, override_settings(**PRODUCTION):
        outcome = await webhooks.deliver(f"https://2130706433:{receiver.port}/hook", {}, key=key)
        await webhooks.close_pool()
        assert not outcome.ok
        assert "SSRF" in outcome.error
        assert receiver.requests == []


async def test_redirects_are_not_followed():
    from durable_streams.subscriptions import signing, webhooks

    key = signing.SigningKey.from_seed(bytes(32))
    with LoopbackReceiver() as target, LoopbackReceiver() as redirector:
        redirector.reply(302, b"", headers={"Location": f"http://127.0.0.1:{target.port}/"})
        with override_settings(**DEVELOPMENT):
            outcome = await webhooks.deliver(redirector.url, {"x": 1}, key=key)
            await webhooks.close_pool()
        assert (outcome.ok, outcome.status) == (False, 302)
        assert len(redirector.requests) == 1
        assert target.requests == []
