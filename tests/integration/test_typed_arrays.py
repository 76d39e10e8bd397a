"""The typed array parameters (storage.arrays) reach PostgreSQL as the same
arrays their plain lists do: with their binary dumpers registered (the pool's
connections) and without them (Django's connection dumps them as lists)."""

from __future__ import annotations

import pytest
from psycopg import pq
from psycopg.adapt import PyFormat

from durable_streams.storage import arrays

pytestmark = pytest.mark.django_db

CASES = [
    (arrays.TextArray, "text", ["a", None, "", "NULL", 'q"u,o{t}e\\', "é ∑ \u3000"]),
    (arrays.TextArray, "text", []),
    (arrays.Int8Array, "bigint", [0, -1, 2**63 - 1, -(2**63), 300]),
    (arrays.Int8Array, "bigint", []),
    (arrays.ByteaArray, "bytea", [b"", b"\x00\xff\\x", b'{"a":1}' * 1000]),
    (arrays.ByteaArray, "bytea", []),
]


@pytest.mark.parametrize("registered", [True, False], ids=["binary dumpers", "as lists"])
@pytest.mark.parametrize(("cls", "sql_type", "items"), CASES)
async def test_a_typed_array_arrives_as_its_list_would(pg_conn, registered, cls, sql_type, items):
    if registered:
        arrays.register(pg_conn)
    dumper = pg_conn.adapters.get_dumper(cls, PyFormat.AUTO)
    assert (dumper.format == pq.Format.BINARY) is registered
    async with pg_conn.cursor(binary=True) as cursor:
        await cursor.execute(
            f"SELECT %s::{sql_type}[], cardinality(%s::{sql_type}[])", [cls(items), cls(items)]
        )
        assert await cursor.fetchone() == (items, len(items))
