"""JSON values of model fields, and txids."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from durable_streams.state import current_txid, txid
from durable_streams.state.txid import check_txid
from durable_streams.state.values import jsonable


def test_jsonable_gives_json_types_in_fixed_forms():
    paris = dt.timezone(dt.timedelta(hours=2))
    value = {
        "when": dt.datetime(2025, 1, 15, 12, 30, 0, 123456, tzinfo=paris),
        "naive": dt.datetime(2025, 1, 15, 12, 30),
        "day": dt.date(2025, 1, 15),
        "at": dt.time(8, 5),
        "took": dt.timedelta(minutes=90),
        "price": decimal.Decimal("1.50"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "blob": b"\x00\xff",
        "nested": [(1, 2.5, None, True)],
    }
    assert jsonable(value) == {
        "when": "2025-01-15T10:30:00.123456Z",
        "naive": "2025-01-15T12:30:00",
        "day": "2025-01-15",
        "at": "08:05:00",
        "took": "P0DT01H30M00S",
        "price": "1.50",
        "id": "12345678-1234-5678-1234-567812345678",
        "blob": "AP8=",
        "nested": [[1, 2.5, None, True]],
    }


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), decimal.Decimal("NaN"), {1: "x"}, object()]
)
def test_jsonable_refuses_what_json_cannot_carry(bad):
    with pytest.raises(ValueError):
        jsonable({"v": bad})


def test_txid_blocks_nest_and_restore():
    assert current_txid() is None
    with txid("outer") as outer:
        assert outer == "outer" and current_txid() == "outer"
        with txid() as inner:
            assert current_txid() == inner != "outer"
            assert len(inner) == 36  # a UUID, like crypto.randomUUID()
        assert current_txid() == "outer"
    assert current_txid() is None


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "tab\t", "é", 7])
def test_malformed_txids_are_refused(bad):
    with pytest.raises(ValueError, match="txid"):
        check_txid(bad)
    with pytest.raises(ValueError), txid(bad):
        pass
