"""Content types and JSON mode (spec section 9): parsing, flattening, validation."""

from __future__ import annotations

import json

import pytest

from durable_streams import content
from durable_streams.exceptions import BadRequest


def messages(payload: content.Payload) -> list[bytes]:
    """The stored messages of a JSON payload, cut at its boundaries."""
    assert payload.boundaries is not None
    assert len(payload.boundaries) == payload.units
    cuts = [*payload.boundaries, len(payload.data) + 1]
    return [payload.data[cuts[i] : cuts[i + 1] - 1] for i in range(payload.units)]


# --- flattening (9.1.2) -----------------------------------------------------------


def test_a_single_json_value_is_one_message():
    payload = content.parse_json(b'{"event": "created"}', allow_empty=False)
    assert payload.units == 1
    assert messages(payload) == [b'{"event": "created"}']


def test_a_top_level_array_is_flattened_into_one_message_per_element():
    payload = content.parse_json(b'[{"event": "a"}, {"event": "b"}]', allow_empty=False)
    assert messages(payload) == [b'{"event": "a"}', b'{"event": "b"}']
    assert payload.data == b'{"event": "a"},{"event": "b"}'


def test_only_one_array_level_is_flattened():
    assert messages(content.parse_json(b"[[1,2], [3,4]]", allow_empty=False)) == [
        b"[1,2]",
        b"[3,4]",
    ]
    assert messages(content.parse_json(b"[[[1,2,3]]]", allow_empty=False)) == [b"[[1,2,3]]"]
    assert messages(content.parse_json(b"[[]]", allow_empty=False)) == [b"[]"]


@pytest.mark.parametrize(
    "body",
    [b"1", b"-0.5e-3", b'"text"', b"true", b"false", b"null", b"{}", b'{"a":[1,{"b":null}]}'],
)
def test_scalars_and_objects_are_single_messages(body):
    payload = content.parse_json(body, allow_empty=False)
    assert messages(payload) == [body]


def test_whitespace_around_messages_and_the_array_is_dropped():
    payload = content.parse_json(b" \r\n\t[ 1 ,\n 2\t]\n ", allow_empty=False)
    assert messages(payload) == [b"1", b"2"]


# --- original text is preserved -----------------------------------------------------


def test_each_message_keeps_its_exact_source_text():
    body = '[1.0, 1e2, 1E+2, -0, "\\u00e9", "é", {"b": 1,  "a" : 2}, 12345678901234567890]'
    payload = content.parse_json(body.encode(), allow_empty=False)
    assert messages(payload) == [
        b"1.0",
        b"1e2",
        b"1E+2",
        b"-0",
        b'"\\u00e9"',
        '"é"'.encode(),
        b'{"b": 1,  "a" : 2}',
        b"12345678901234567890",
    ]


def test_stored_data_joined_in_an_array_is_valid_json_equal_to_the_input():
    body = '[{"x": 1.50}, [1, 2], "snow ☃", null, 3]'
    payload = content.parse_json(body.encode(), allow_empty=False)
    assert json.loads(b"[" + payload.data + b"]") == json.loads(body)


# --- empty arrays (9.1.3) ------------------------------------------------------------


def test_an_empty_array_is_rejected_on_append():
    with pytest.raises(BadRequest):
        content.parse_json(b"[]", allow_empty=False)
    with pytest.raises(BadRequest):
        content.parse_json(b" [ \n ] ", allow_empty=False)


def test_an_empty_array_creates_no_messages_where_allowed():
    payload = content.parse_json(b"[ ]", allow_empty=True)
    assert payload.units == 0
    assert payload.data == b""
    assert payload.boundaries == []


# --- validation (9.1.4) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{",
        b"[",
        b"]",
        b"[1,]",
        b"[,1]",
        b"[1 2]",
        b"[1,,2]",
        b"[1]]",
        b"[1] 2",
        b"1 2",
        b"{} {}",
        b"[1,2",
        b"'single'",
        b"{a: 1}",
        b'{"a" 1}',
        b"undefined",
        b"01",
        b"1.",
        b".5",
        b"+1",
        b"0x10",
        b"[1]x",
        b'"unterminated',
        b"\xef\xbb\xbf[1]",  # a byte order mark is not JSON
    ],
)
def test_invalid_json_is_a_bad_request(body):
    with pytest.raises(BadRequest):
        content.parse_json(body, allow_empty=True)


@pytest.mark.parametrize(
    "body",
    [
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"[1, NaN]",
        b'{"a": Infinity}',
        b"[[-Infinity]]",
        b'{"a": {"b": [NaN]}}',
    ],
)
def test_nan_and_infinity_are_rejected_anywhere_in_the_body(body):
    with pytest.raises(BadRequest):
        content.parse_json(body, allow_empty=False)


@pytest.mark.parametrize("body", [b"\xff", b'"\xc3"', b'["ok", "\xed\xa0\x80"]'])
def test_bodies_that_are_not_utf8_are_rejected(body):
    with pytest.raises(BadRequest):
        content.parse_json(body, allow_empty=False)


def test_pathologically_deep_nesting_is_a_bad_request_not_a_crash():
    with pytest.raises(BadRequest):
        content.parse_json(b"[" * 200_000 + b"]" * 200_000, allow_empty=False)


# --- content types ------------------------------------------------------------------------


def test_parse_body_treats_non_json_types_as_raw_bytes():
    payload = content.parse_body("application/octet-stream", b"[1,2]", allow_empty_json=False)
    assert payload == content.Payload(data=b"[1,2]", units=5, boundaries=None)
    assert content.parse_body("text/plain", b"", allow_empty_json=False).units == 0


def test_parse_body_uses_json_mode_whatever_the_case_and_parameters():
    payload = content.parse_body(
        "Application/JSON; charset=utf-8", b"[1,2]", allow_empty_json=False
    )
    assert payload.units == 2


def test_media_type_comparisons_ignore_case_and_parameters():
    assert content.media_type(" Text/Plain ; charset=utf-8") == "text/plain"
    assert content.same_type("text/plain", "TEXT/PLAIN; charset=utf-8")
    assert not content.same_type("text/plain", "text/html")
    assert content.is_json("application/json;charset=utf-8")
    assert not content.is_json("application/ndjson")


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("text/plain", True),
        ("text/csv; charset=utf-8", True),
        ("application/json", True),
        ("application/octet-stream", False),
        ("application/ndjson", False),
        ("image/png", False),
    ],
)
def test_only_text_and_json_streams_are_sent_as_text_over_sse(content_type, text):
    assert content.is_text(content_type) is text


@pytest.mark.parametrize(
    ("content_type", "valid"),
    [
        ("text/plain", True),
        ("application/vnd.example+json; v=1", True),
        ("text", False),
        ("a/b/c", False),
        ("/plain", False),
        ("text/", False),
        ("te xt/plain", False),
        ("text/pl\x00ain", False),
    ],
)
def test_valid_content_type(content_type, valid):
    assert content.valid_content_type(content_type) is valid
