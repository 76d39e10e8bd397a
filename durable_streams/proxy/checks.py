"""System checks for the proxy's settings (ids durable_streams.E030-E034, W030)."""

from __future__ import annotations

from django.core.checks import Error, Warning

from . import allowlist, conf


def check_proxy_settings(app_configs=None, **kwargs) -> list:
    problems = []
    upstreams = conf.get("PROXY_ALLOWED_UPSTREAMS")
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
    secret = conf.get("PROXY_SECRET")
    if secret is not None and not isinstance(secret, str):
        problems.append(
            Error("DURABLE_STREAMS['PROXY_SECRET'] must be a string.", id="durable_streams.E031")
        )
    elif upstreams and not secret:
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
    for key in (
        "PROXY_URL_EXPIRES",
        "PROXY_STREAM_TTL",
        "PROXY_HEADER_TIMEOUT",
        "PROXY_IDLE_TIMEOUT",
        "PROXY_MAX_ERROR_BODY",
        "PROXY_MAX_REQUEST_BODY",
        "PROXY_BATCH_BYTES",
    ):
        value = conf.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            problems.append(
                Error(
                    f"DURABLE_STREAMS[{key!r}] must be a positive number, not {value!r}.",
                    id="durable_streams.E033",
                )
            )
    prefix = conf.get("PROXY_STREAM_PREFIX")
    if not isinstance(prefix, str) or not prefix.endswith("/") or prefix.startswith("/"):
        problems.append(
            Error(
                "DURABLE_STREAMS['PROXY_STREAM_PREFIX'] must be a relative path ending in '/'.",
                id="durable_streams.E034",
            )
        )
    return problems
