"""Request header parsing (spec sections 4 and 5): one rule per header."""

from __future__ import annotations

import datetime as dt

import pytest

from durable_streams import headers, offsets
from durable_streams.exceptions import BadRequest


@pytest.mark.parametrize("value", ["true", "TRUE", " True ", "true\t"])
def test_a_flag_is_set_only_by_true(value):
    assert headers.flag(value) is True


@pytest.mark.parametrize("value", [None, "", "false", "1", "yes", "truthy", "t"])
def test_a_flag_is_unset_by_anything_but_true(value):
    assert headers.flag(value) is False


@pytest.mark.parametrize(
    ("value", "number"), [("0", 0), ("7", 7), (" 42 ", 42), ("9" * 30, 10**30 - 1)]
)
def test_integer_headers_are_plain_decimal_digits(value, number):
    assert headers.parse_int("X", value) == number


@pytest.mark.parametrize(
    "value", ["", " ", "-1", "+1", "01", "1.0", "1e3", "0x10", "1_000", "\u0661", "\uff11", "1 2"]
)
def test_integer_headers_refuse_signs_leading_zeros_and_non_ascii_digits(value):
    with pytest.raises(BadRequest, match="X must be a non-negative integer"):
        headers.parse_int("X", value)


def test_integer_headers_refuse_values_past_their_maximum():
    assert headers.parse_int("X", "10", maximum=10) == 10
    with pytest.raises(BadRequest, match="X must be at most 10"):
        headers.parse_int("X", "11", maximum=10)


def test_stream_ttl_is_seconds_up_to_a_century():
    assert headers.parse_ttl(None) is None
    assert headers.parse_ttl("3600") == 3600
    assert headers.parse_ttl(str(headers.MAX_TTL)) == headers.MAX_TTL
    for bad in (str(headers.MAX_TTL + 1), "-5", "1.5", "ten"):
        with pytest.raises(BadRequest):
            headers.parse_ttl(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-02T03:04:05Z", dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        ("2030-01-02t03:04:05z", dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        ("2030-01-02 03:04:05.250Z", dt.datetime(2030, 1, 2, 3, 4, 5, 250000, tzinfo=dt.UTC)),
        ("2030-01-02T05:04:05+02:00", dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    ],
)
def test_expires_at_is_an_rfc_3339_instant(value, expected):
    assert headers.parse_expires_at(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2030-01-02T03:04:05",  # no time zone: which instant?
        "2030-01-02",
        "20300102T030405Z",  # ISO 8601 basic format is not RFC 3339
        "2030-01-02T03:04Z",
        "2030-01-02T03:04:05+0200",
        "2030-13-02T03:04:05Z",
        "tomorrow",
        "",
    ],
)
def test_expires_at_refuses_what_rfc_3339_does_not_allow(value):
    with pytest.raises(BadRequest, match="RFC 3339"):
        headers.parse_expires_at(value)


def test_expires_at_out_of_the_storable_range_is_a_400():
    with pytest.raises(BadRequest, match="out of range"):
        headers.parse_expires_at("9999-12-31T23:59:59-01:00")


def test_expires_at_is_formatted_in_utc_with_z():
    value = dt.datetime(2030, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert headers.format_expires_at(value) == "2030-01-02T03:04:05Z"
    assert headers.parse_expires_at(headers.format_expires_at(value)) == value


def test_fork_source_is_the_stream_path_below_the_request_prefix():
    assert headers.fork_source(None, "/v1/stream/new", "new") is None
    assert headers.fork_source("/v1/stream/a/b", "/v1/stream/new", "new") == "a/b"
    assert headers.fork_source(" /v1/stream/a%20b ", "/v1/stream/new", "new") == "a b"


@pytest.mark.parametrize("value", ["/v1/stream/", "/other/a", "a", "", "/v1/streamx/a"])
def test_fork_source_outside_the_stream_prefix_is_a_400(value):
    with pytest.raises(BadRequest, match="Stream-Forked-From"):
        headers.fork_source(value, "/v1/stream/new", "new")


def test_fork_offset_is_a_position_but_never_now():
    assert headers.fork_offset(None) is None
    assert headers.fork_offset("-1") == 0
    assert headers.fork_offset(offsets.encode(9)) == 9
    with pytest.raises(BadRequest, match="must be an offset"):
        headers.fork_offset("now")
    with pytest.raises(offsets.InvalidOffset):
        headers.fork_offset("9")


_NAMES = [
    "Content-Type",
    "Content-Length",
    "Stream-Closed",
    "Producer-Id",
    "Origin",
    "If-None-Match",
]


def test_a_header_read_from_meta_is_what_request_headers_has_for_asgi_requests():
    import io

    from django.core.handlers.asgi import ASGIRequest

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/stream/x",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"2"),
            (b"stream-closed", b"true"),
            (b"if-none-match", b'"a"'),
            (b"if-none-match", b'"b"'),  # repeated: joined with a comma
            (b"producer_id", b"spoofed"),  # underscores: dropped by Django
        ],
    }
    request = ASGIRequest(scope, io.BytesIO(b"{}"))
    for name in [*_NAMES, "producer-id", "CONTENT-TYPE"]:
        assert headers.get(request, name) == request.headers.get(name), name
    assert headers.get(request, "If-None-Match") == '"a","b"'
    assert headers.get(request, "Producer-Id") is None


def test_a_header_read_from_meta_is_what_request_headers_has_for_wsgi_requests(rf):
    request = rf.post(
        "/v1/stream/x",
        data=b"{}",
        content_type="application/json",
        headers={"Origin": "https://a.example", "Producer-Id": "p"},
    )
    for name in _NAMES:
        assert headers.get(request, name) == request.headers.get(name), name
    assert headers.get(request, "Origin") == "https://a.example"
