"""System checks of the proxy's settings beyond their types (which
:func:`durable_streams.checks.check_settings` reports as E004/E005):
E030 an invalid allowlist entry, E032 upstreams but no secret, W030 a short
secret. Registered in :mod:`durable_streams.checks`."""

from __future__ import annotations

from django.core.checks import Error, Warning

from ..conf import ds_settings
from . import allowlist


def check_proxy_settings(app_configs=None, **kwargs) -> list:
    if any(p.key in ("PROXY_ALLOWED_UPSTREAMS", "PROXY_SECRET") for p in ds_settings.problems()):
        return []  # a value of the wrong type: E005 already says so
    problems = []
    upstreams = ds_settings.PROXY_ALLOWED_UPSTREAMS
    bad = allowlist.invalid_patterns(upstreams)
    if bad:
        problems.append(
            Error(
                "DURABLE_STREAMS['PROXY_ALLOWED_UPSTREAMS'] has invalid entries: " + ", ".join(bad),
                hint="Each entry is an http(s) URL prefix, e.g. 'https://api.openai.com/v1/'; "
                "the host may start with '*.'.",
                id="durable_streams.E030",
            )
        )
    secret = ds_settings.PROXY_SECRET
    if upstreams and not secret:
        problems.append(
            Error(
                "The proxy has allowed upstreams but no PROXY_SECRET: every request gets 401.",
                hint="Set DURABLE_STREAMS['PROXY_SECRET'] to a long random string.",
                id="durable_streams.E032",
            )
        )
    elif secret and len(secret) < 32:
        problems.append(
            Warning(
                "DURABLE_STREAMS['PROXY_SECRET'] is shorter than 32 characters; it signs "
                "capability URLs and authenticates services.",
                id="durable_streams.W030",
            )
        )
    return problems
