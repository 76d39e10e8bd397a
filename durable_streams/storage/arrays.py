"""Typed one-dimensional arrays as query parameters, dumped in binary at a
fixed type.

psycopg dumps a plain ``list`` by inspecting its elements on every execute
(their types, the largest int) to choose the array type, and then writes the
text form element by element: about 35 function calls per array. A list of
one of these classes says its type up front, so its dumper writes the binary
form at once. :func:`register` installs the dumpers on a connection; without
them (Django's own connection) the classes are dumped as the lists they are,
so the SQL must still cast each parameter to its array type.
"""

from __future__ import annotations

import struct
from typing import Any

from psycopg import postgres, pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper

_HEAD = struct.Struct("!IIIII")  # ndims, has nulls, element oid, length, lower bound
_EMPTY = struct.Struct("!III")  # ndims 0, no nulls, element oid
_LENGTH = struct.Struct("!i")  # an element's length in bytes, -1 for NULL
_INT8 = struct.Struct("!iq")  # an int8 element: its length (8), its value
_NULL = _LENGTH.pack(-1)


class TextArray(list):
    """A ``text[]`` parameter: ``str`` or ``None`` elements."""


class Int8Array(list):
    """A ``bigint[]`` parameter: ``int`` elements, no ``None``."""


class ByteaArray(list):
    """A ``bytea[]`` parameter: ``bytes`` elements, no ``None``."""


class _ArrayDumper(Dumper):
    format = pq.Format.BINARY
    element_oid = 0

    def head(self, obj: list[Any], has_null: int) -> bytes:
        """The array's header: one dimension of ``len(obj)`` elements, or none if empty."""
        if not obj:
            return _EMPTY.pack(0, 0, self.element_oid)
        return _HEAD.pack(1, has_null, self.element_oid, len(obj), 1)


# Each element goes in as its length and its bytes (``pieces +=`` a tuple, not
# two appends: these run per parameter element on every plain append).


class _TextArrayDumper(_ArrayDumper):
    oid = postgres.types["text"].array_oid
    element_oid = postgres.types["text"].oid

    def dump(self, obj: list[str | None]) -> Buffer | None:
        pieces: list[bytes] = [b""]
        has_null = 0
        for item in obj:
            if item is None:
                pieces.append(_NULL)
                has_null = 1
            else:
                data = item.encode()
                pieces += (_LENGTH.pack(len(data)), data)
        pieces[0] = self.head(obj, has_null)
        return b"".join(pieces)


class _Int8ArrayDumper(_ArrayDumper):
    oid = postgres.types["int8"].array_oid
    element_oid = postgres.types["int8"].oid

    def dump(self, obj: list[int]) -> Buffer | None:
        return self.head(obj, 0) + b"".join([_INT8.pack(8, n) for n in obj])


class _ByteaArrayDumper(_ArrayDumper):
    oid = postgres.types["bytea"].array_oid
    element_oid = postgres.types["bytea"].oid

    def dump(self, obj: list[bytes]) -> Buffer | None:
        pieces: list[Buffer] = [self.head(obj, 0)]
        for data in obj:
            pieces += (_LENGTH.pack(len(data)), data)
        return b"".join(pieces)


def register(context: AdaptContext) -> None:
    """Dump the typed arrays of this module in binary on ``context`` (a connection)."""
    adapters = context.adapters
    adapters.register_dumper(TextArray, _TextArrayDumper)
    adapters.register_dumper(Int8Array, _Int8ArrayDumper)
    adapters.register_dumper(ByteaArray, _ByteaArrayDumper)
