"""Subscription rules without a database: globs, request bodies, config hash,
tokens, generation fencing and ack validation (spec 6 and 7)."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from durable_streams import offsets
from durable_streams.subscriptions import config, fencing, globs, tokens
from durable_streams.subscriptions.errors import SubscriptionError


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


# --- globs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/*", "events", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b/c", True),
        ("**", "anything/at/all", True),
        ("**/log", "log", True),
        ("**/log", "a/b/log", True),
        ("**/log", "a/b/logs", False),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("a/**/z", "a/b/c/y", False),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a//c", False),
        ("events.v1/*", "eventsXv1/a", False),
        ("events.v1/*", "events.v1/a", True),
        ("a+b/(x)/[y]", "a+b/(x)/[y]", True),
        ("tenant/*/chat", "tenant/42/chat", True),
        ("/events/*/", "events/a", True),
    ],
)
def test_glob_star_matches_one_segment_and_double_star_any(pattern, path, expected):
    assert globs.matches(globs.validate(pattern), path) is expected


@pytest.mark.parametrize("pattern", ["events/*", "a/**/z", "x.y/+/(q)", "**"])
def test_glob_regex_is_plain_enough_for_postgres(pattern):
    # The trigger runs the same expression in PostgreSQL: only \A, \Z,
    # (?:...), [^/]+, * and backslash-escaped punctuation may appear.
    regex = globs.to_regex(globs.validate(pattern))
    stripped = re.sub(r"\\A|\\Z|\(\?:/\[\^/\]\+\)\*|/\[\^/\]\+|\\[^A-Za-z0-9]", "", regex)
    assert not set(stripped) & set("\\^$.|?*+()[]{}")


@pytest.mark.parametrize("pattern", ["", "/", "a//b", "ev*nts/x", "a/**b", "__ds/*", 3, None])
def test_bad_globs_are_invalid_requests(pattern):
    with pytest.raises(SubscriptionError) as info:
        globs.validate(pattern)
    assert (info.value.code, info.value.status) == ("INVALID_REQUEST", 400)


# --- create bodies and the config hash -----------------------------------------


def test_create_body_is_normalised_with_defaults():
    cfg = config.parse_create(
        body(type="pull-wake", pattern="/events/*/", streams=["b", "/a/", "b"], wake_stream="w/")
    )
    assert cfg.pattern == "events/*"
    assert cfg.streams == ("a", "b")
    assert cfg.wake_stream == "w"
    assert cfg.lease_ttl_ms == config.DEFAULT_LEASE_TTL_MS
    assert cfg.webhook_url is None


def test_config_hash_ignores_order_and_duplicates_of_streams_only():
    a = config.parse_create(body(type="pull-wake", streams=["x", "y"], wake_stream="w"))
    b = config.parse_create(body(type="pull-wake", streams=["y", "x", "x"], wake_stream="w"))
    c = config.parse_create(
        body(type="pull-wake", streams=["x", "y"], wake_stream="w", description="d")
    )
    d = config.parse_create(
        body(type="pull-wake", streams=["x", "y"], wake_stream="w", lease_ttl_ms=1000)
    )
    assert a.config_hash() == b.config_hash()
    assert len({a.config_hash(), c.config_hash(), d.config_hash()}) == 3


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1]",
        body(type="cron", streams=["a"]),
        body(type="pull-wake", wake_stream="w"),  # neither pattern nor streams
        body(type="pull-wake", streams=["a"]),  # no wake_stream
        body(type="webhook", streams=["a"]),  # no webhook
        body(type="webhook", streams=["a"], webhook={"url": ""}),
        body(type="webhook", streams=["a"], webhook={"url": "https://x", "secret": "s"}),
        body(type="pull-wake", streams=["a"], wake_stream="w", webhook={"url": "https://x"}),
        body(type="pull-wake", streams=["a"], wake_stream="w", colour="red"),
        body(type="pull-wake", streams="a", wake_stream="w"),
        body(type="pull-wake", streams=[""], wake_stream="w"),
        body(type="pull-wake", streams=[7], wake_stream="w"),
        body(type="pull-wake", streams=["a/../b"], wake_stream="w"),
        body(type="pull-wake", streams=["__ds/x"], wake_stream="w"),
        body(type="pull-wake", streams=["a"], wake_stream="w", lease_ttl_ms=999),
        body(type="pull-wake", streams=["a"], wake_stream="w", lease_ttl_ms=600001),
        body(type="pull-wake", streams=["a"], wake_stream="w", lease_ttl_ms=1500.5),
        body(type="pull-wake", streams=["a"], wake_stream="w", lease_ttl_ms=True),
        body(type="pull-wake", streams=["a"], wake_stream="w", description=5),
        body(type="pull-wake", pattern="a/b*", wake_stream="w"),
    ],
)
def test_malformed_create_bodies_are_400_invalid_request(raw):
    with pytest.raises(SubscriptionError) as info:
        config.parse_create(raw)
    assert (info.value.code, info.value.status) == ("INVALID_REQUEST", 400)


def test_wake_request_bodies_are_checked_field_by_field():
    req = config.parse_wake_request(
        body(wake_id="w_1", generation=3, acks=[{"stream": "/a/", "offset": "x"}], done=True)
    )
    assert req == config.WakeRequest("w_1", 3, (config.Ack("a", "x"),), True)
    for raw in [
        body(wake_id=1, generation=1),
        body(wake_id="w", generation="1"),
        body(wake_id="w", generation=1, done="yes"),
        body(wake_id="w", generation=1, acks={}),
        body(wake_id="w", generation=1, acks=[{"stream": "a"}]),
        body(wake_id="w", generation=1, acks=[{"stream": "a", "offset": "o", "x": 1}]),
        body(wake_id="w", generation=1, extra=True),
    ]:
        with pytest.raises(SubscriptionError) as info:
            config.parse_wake_request(raw)
        assert info.value.status == 400
    with pytest.raises(SubscriptionError):
        config.parse_wake_request(body(wake_id="w", generation=1, done=True), allow_acks=False)


def test_claim_and_membership_bodies():
    assert config.parse_claim(body(worker="w-1")) == "w-1"
    assert config.parse_streams(body(streams=["b", "a/"])) == ["a", "b"]
    for raw in [body(), body(worker=""), body(worker=3), body(worker="w", x=1)]:
        with pytest.raises(SubscriptionError):
            config.parse_claim(raw)
    for raw in [body(), body(streams=[]), body(streams=["", "a"])]:
        with pytest.raises(SubscriptionError):
            config.parse_streams(raw)


# --- tokens ------------------------------------------------------------------------


def test_tokens_round_trip_and_reject_forgery():
    token = tokens.issue(7, 3, "w_abc")
    assert tokens.verify(token) == tokens.TokenClaims(7, 3, "w_abc")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in [forged, "", "eyJ.garbage", token + "x"]:
        with pytest.raises(SubscriptionError) as info:
            tokens.verify(bad)
        assert (info.value.code, info.value.status) == ("TOKEN_INVALID", 401)


def test_expired_tokens_are_token_expired():
    token = tokens.issue(7, 3, "w_abc")
    with pytest.raises(SubscriptionError) as info:
        tokens.verify(token, max_age=-1)
    assert info.value.code == "TOKEN_EXPIRED"


def test_bearer_header_parsing():
    assert tokens.bearer("Bearer abc") == "abc"
    for bad in [None, "", "Basic abc", "Bearer ", "bearer abc"]:
        with pytest.raises(SubscriptionError):
            tokens.bearer(bad)


# --- fencing -------------------------------------------------------------------------

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(seconds=30)


def state(**kw) -> fencing.WakeState:
    fields = {
        "pk": 1,
        "generation": 4,
        "wake_id": "w_4",
        "holder": "worker",
        "lease_expires_at": LATER,
    }
    fields.update(kw)
    return fencing.WakeState(**fields)


def test_current_wake_passes_the_fence():
    fencing.check_wake(
        state(), tokens.TokenClaims(1, 4, "w_4"), config.WakeRequest("w_4", 4, (), False), NOW
    )


CURRENT = tokens.TokenClaims(1, 4, "w_4")
ASKED = config.WakeRequest("w_4", 4, (), False)


@pytest.mark.parametrize(
    ("st", "claims", "request_"),
    [
        (state(), tokens.TokenClaims(1, 3, "w_4"), ASKED),
        (state(), tokens.TokenClaims(1, 4, "w_3"), ASKED),
        (state(), CURRENT, config.WakeRequest("w_4", 3, (), False)),
        (state(), CURRENT, config.WakeRequest("w_x", 4, (), False)),
        (state(), CURRENT, config.WakeRequest(None, None, (), False)),
        (state(wake_id=None), CURRENT, ASKED),
        (state(lease_expires_at=NOW), CURRENT, ASKED),
    ],
)
def test_stale_generation_wake_or_lease_is_fenced(st, claims, request_):
    with pytest.raises(SubscriptionError) as info:
        fencing.check_wake(st, claims, request_, NOW)
    assert (info.value.code, info.value.status) == ("FENCED", 409)


def test_token_of_another_subscription_row_is_invalid_not_fenced():
    with pytest.raises(SubscriptionError) as info:
        fencing.check_wake(
            state(), tokens.TokenClaims(2, 4, "w_4"), config.WakeRequest("w_4", 4, (), False), NOW
        )
    assert info.value.code == "TOKEN_INVALID"


def test_idle_means_no_wake_and_no_live_lease():
    assert state(wake_id=None, holder=None, lease_expires_at=None).is_idle(NOW)
    assert not state(holder=None).is_idle(NOW)
    assert state(wake_id=None, lease_expires_at=NOW).is_idle(NOW)


# --- acks ----------------------------------------------------------------------------


def ack(stream: str, offset: str) -> config.Ack:
    return config.Ack(stream, offset)


def test_acks_move_to_the_acked_offset():
    result = fencing.ack_positions(
        [ack("a", offsets.encode(5)), ack("b", offsets.encode(2))],
        {"a": 1, "b": 2},
        {"a": 9, "b": 2},
    )
    assert result == {"a": 5, "b": 2}


@pytest.mark.parametrize(
    ("acks", "status"),
    [
        ([ack("zz", offsets.encode(1))], 409),  # not linked
        ([ack("a", offsets.encode(0))], 409),  # regresses
        ([ack("a", offsets.encode(10))], 409),  # beyond the tail
        ([ack("a", "-1")], 400),
        ([ack("a", "now")], 400),
        ([ack("a", "12")], 400),
        ([ack("a", offsets.encode(5)), ack("a", offsets.encode(4))], 409),
    ],
)
def test_bad_acks_are_invalid_offset_and_move_nothing(acks, status):
    acked = {"a": 1}
    with pytest.raises(SubscriptionError) as info:
        fencing.ack_positions(acks, acked, {"a": 9})
    assert (info.value.code, info.value.status) == ("INVALID_OFFSET", status)
    assert acked == {"a": 1}
