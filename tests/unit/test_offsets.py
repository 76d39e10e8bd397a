"""Offset tokens (spec section 8): encoding, ordering, malformed input."""

from __future__ import annotations

import random

import pytest

from durable_streams import offsets


def test_encode_is_two_zero_padded_groups_of_sixteen_digits():
    assert offsets.encode(0) == "0000000000000000_0000000000000000"
    assert offsets.encode(42) == "0000000000000000_0000000000000042"
    assert offsets.encode(10**16) == "0000000000000001_0000000000000000"
    assert offsets.encode(10**16 - 1) == "0000000000000000_9999999999999999"
    assert offsets.encode(offsets.MAX_POSITION) == "9999999999999999_9999999999999999"


@pytest.mark.parametrize(
    "position",
    [0, 1, 9, 10, 42, 10**16 - 1, 10**16, 10**16 + 1, 2**53 - 1, 2**63 - 1, offsets.MAX_POSITION],
)
def test_decode_inverts_encode(position):
    assert offsets.decode(offsets.encode(position)) == position


def test_lexicographic_order_of_tokens_is_numeric_order_of_positions():
    rng = random.Random(1234)
    positions = {0, 1, 9, 10, 99, 100, 10**16 - 1, 10**16, 10**16 + 1, offsets.MAX_POSITION}
    positions |= {rng.randrange(0, offsets.MAX_POSITION) for _ in range(500)}
    positions |= {rng.randrange(0, 10**6) for _ in range(500)}
    ordered = sorted(positions)
    assert sorted(offsets.encode(p) for p in positions) == [offsets.encode(p) for p in ordered]


def test_tokens_are_fixed_width_url_safe_and_never_a_sentinel():
    for position in (0, 1, 12345, 10**16, offsets.MAX_POSITION):
        token = offsets.encode(position)
        assert len(token) == 33
        assert not set(token) & set(",&=?/ %#+")
        assert token not in (offsets.BEGINNING, offsets.NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "-1",
        "now",
        "42",
        "0_0",
        "0000000000000000-0000000000000000",
        "0000000000000000_000000000000000",  # 15 digits in the low group
        "000000000000000_0000000000000000",  # 15 digits in the high group
        "00000000000000000_0000000000000000",  # 17 digits
        "0000000000000000_00000000000000000",
        "0000000000000000__0000000000000000",
        " 0000000000000000_0000000000000000",
        "0000000000000000_0000000000000000 ",
        "0000000000000000_0000000000000000\n",
        "+000000000000000_0000000000000000",
        "-000000000000000_0000000000000001",
        "000000000000000a_0000000000000000",
        "0000000000000000_000000000000000x",
        "\u0660" * 16 + "_" + "\u0660" * 16,  # Arabic-Indic digits are not [0-9]
        "\uff10" * 16 + "_" + "\uff10" * 16,  # fullwidth digits
        "0000000000000000_0000000000000000_0000000000000000",
        "00000000000000000000000000000000",
    ],
)
def test_decode_rejects_malformed_tokens(token):
    with pytest.raises(offsets.InvalidOffset):
        offsets.decode(token)


def test_invalid_offset_is_a_value_error():
    assert issubclass(offsets.InvalidOffset, ValueError)


def test_invalid_offset_is_a_400_bad_request():
    from durable_streams.exceptions import BadRequest

    with pytest.raises(BadRequest) as caught:
        offsets.decode("bogus")
    assert caught.value.status == 400 and caught.value.message == "malformed offset"


@pytest.mark.parametrize("token", [None, "-1"])
def test_parse_reads_no_offset_and_minus_one_as_the_beginning(token):
    assert offsets.parse(token) == 0


def test_parse_reads_now_as_the_tail_which_only_a_read_can_place():
    assert offsets.parse("now") is None


@pytest.mark.parametrize("position", [0, 1, 42, 10**16, offsets.MAX_POSITION])
def test_parse_reads_a_token_as_its_position(position):
    assert offsets.parse(offsets.encode(position)) == position


@pytest.mark.parametrize("token", ["", "-2", "NOW", " now", "-1 ", "0", "42", "0_0", "later"])
def test_parse_rejects_everything_else(token):
    with pytest.raises(offsets.InvalidOffset):
        offsets.parse(token)
