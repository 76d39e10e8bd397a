"""The proxy's pure rules: allowlist, signatures, SSRF address classes, settings checks."""

import ipaddress

import pytest
from django.test import override_settings

from durable_streams import ssrf
from durable_streams.proxy import allowlist, signing
from durable_streams.proxy.checks import check_proxy_settings
from durable_streams.proxy.errors import ProxyError


@pytest.mark.parametrize(
    ("pattern", "url", "allowed"),
    [
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions", True),
        ("https://api.openai.com/v1/", "https://api.openai.com/v2/chat", False),
        ("https://api.openai.com/v1/", "http://api.openai.com/v1/chat", False),
        ("https://api.openai.com/v1/", "https://api.openai.com:8443/v1/chat", False),
        ("https://api.openai.com/v1", "https://api.openai.com/v1beta/x", False),
        ("https://api.openai.com/v1", "https://api.openai.com/v1", True),
        ("https://api.openai.com/v1/", "https://API.OpenAI.com/v1/x", True),
        ("https://*.example.com/", "https://eu.api.example.com/x", True),
        ("https://*.example.com/", "https://example.com/x", False),
        ("https://*.example.com/", "https://badexample.com/x", False),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/../admin", False),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/%2e%2e/admin", False),
        ("https://api.openai.com/", "https://user:pw@api.openai.com/", False),
        ("https://api.openai.com/", "https://api.openai.com.evil.net/", False),
    ],
)
def test_allowlist_matches_scheme_host_port_and_path_prefix(pattern, url, allowed):
    target = allowlist.parse(url)
    assert (target is not None and allowlist.is_allowed(target, [pattern])) is allowed


def test_empty_allowlist_allows_nothing():
    assert not allowlist.is_allowed(allowlist.parse("https://api.openai.com/"), [])


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("10.1.2.3", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("::1", False),
        ("::ffff:10.0.0.1", False),
        ("2606:4700::1111", True),
        ("224.0.0.1", False),
    ],
)
def test_ssrf_rules_accept_only_public_addresses(address, public):
    assert ssrf.is_public(ipaddress.ip_address(address)) is public


def test_ssrf_development_exception_covers_loopback_only():
    loopback = ipaddress.ip_address("127.0.0.1")
    private = ipaddress.ip_address("10.0.0.1")
    assert ssrf.address_allowed("localhost", loopback, allow_localhost=True)
    assert not ssrf.address_allowed("localhost", loopback, allow_localhost=False)
    assert not ssrf.address_allowed("localhost", private, allow_localhost=True)
    # A public-looking name resolving to loopback is refused even in development.
    assert not ssrf.address_allowed("evil.example", loopback, allow_localhost=True)


@override_settings(DURABLE_STREAMS={"PROXY_SECRET": "s" * 40})
def test_signature_is_bound_to_stream_and_expiry():
    a = signing.signature("a" * 32, 2000000000)
    assert a == signing.signature("a" * 32, 2000000000)
    assert a != signing.signature("b" * 32, 2000000000)
    assert a != signing.signature("a" * 32, 2000000001)
    assert "=" not in a and "+" not in a and "/" not in a


@override_settings(DURABLE_STREAMS={})
def test_signing_without_a_secret_refuses():
    with pytest.raises(ProxyError) as info:
        signing.sign("a" * 32)
    assert info.value.status == 401


def _ids(**settings):
    with override_settings(DURABLE_STREAMS=settings):
        return sorted(p.id for p in check_proxy_settings())


def test_checks_report_bad_proxy_settings():
    assert _ids() == []
    assert _ids(PROXY_ALLOWED_UPSTREAMS=["ftp://x/"], PROXY_SECRET="s" * 40) == [
        "durable_streams.E030"
    ]
    assert _ids(PROXY_ALLOWED_UPSTREAMS=["https://api.openai.com/"]) == ["durable_streams.E032"]
    assert _ids(PROXY_SECRET="short") == ["durable_streams.W030"]
    # A secret of the wrong type is check_settings' E005, not reported twice.
    assert _ids(PROXY_SECRET=123, PROXY_ALLOWED_UPSTREAMS=["https://api.openai.com/"]) == []
