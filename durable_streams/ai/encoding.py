"""How a generation's chunks become the bytes of a stream.

An :class:`Encoding` turns one chunk (whatever the source yields: a token, an
SDK event, a dict) into zero or more *units*, each already serialised, and
joins the units of one batch into the body of one append. Two kinds exist:

- :class:`JSONMessages`: every unit is one JSON message of an
  ``application/json`` stream; a batch is appended as one JSON array, which the
  stream flattens back into one message per unit.
- :class:`Text`: units are raw bytes (``str`` is encoded as UTF-8) of a text or
  binary stream; a batch is their concatenation.

Pure logic: no database, no settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Encoding",
    "ErrorMarker",
    "JSONMessages",
    "Text",
    "resolve_encoding",
]

#: Turns the exception that ended a generation (``asyncio.CancelledError`` for
#: a cancellation) into the marker written before the stream is closed.
ErrorMarker = Callable[[BaseException], Any]

_JSON_SEPARATORS = (",", ":")


def describe_failure(error: BaseException) -> str:
    """A short, safe text for a failure: never the exception's message, which
    may carry an upstream API's details (the server log keeps those)."""
    import asyncio

    if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)):
        return "generation cancelled"
    return "generation failed"


def default_json_error(error: BaseException) -> dict[str, Any]:
    return {"type": "error", "error": describe_failure(error)}


def default_text_error(error: BaseException) -> str:
    return f"\n[{describe_failure(error)}]\n"


@runtime_checkable
class Encoding(Protocol):
    """Serialises chunks for one kind of stream."""

    content_type: str

    def encode(self, chunk: Any) -> list[bytes]:
        """The units ``chunk`` becomes (none to skip it)."""

    def join(self, units: list[bytes]) -> bytes:
        """The body of one append carrying ``units``, in order."""

    def error_units(self, error: BaseException) -> list[bytes]:
        """The marker written when the generation fails or is cancelled."""


class JSONMessages:
    """One JSON message per chunk, or per item a ``transform`` returns.

    ``transform(chunk)`` returns an iterable of messages (``None`` or an empty
    iterable skips the chunk); without it every chunk is one message as is.
    ``error_marker(exc)`` returns the message written on failure (``None``
    writes no marker).
    """

    content_type = "application/json"

    def __init__(
        self,
        transform: Callable[[Any], Iterable[Any] | None] | None = None,
        *,
        error_marker: ErrorMarker | None = default_json_error,
    ) -> None:
        self.transform = transform
        self.error_marker = error_marker

    @staticmethod
    def dump(message: Any) -> bytes:
        return json.dumps(message, separators=_JSON_SEPARATORS, ensure_ascii=False).encode()

    def encode(self, chunk: Any) -> list[bytes]:
        if self.transform is None:
            return [self.dump(chunk)]
        messages = self.transform(chunk)
        if messages is None:
            return []
        return [self.dump(message) for message in messages]

    def join(self, units: list[bytes]) -> bytes:
        # One array: the stream stores each element as its own message.
        return b"[" + b",".join(units) + b"]"

    def error_units(self, error: BaseException) -> list[bytes]:
        if self.error_marker is None:
            return []
        marker = self.error_marker(error)
        return [] if marker is None else [self.dump(marker)]


class Text:
    """Raw chunks: ``str`` (encoded as UTF-8) or bytes, concatenated.

    ``transform(chunk)`` may first turn an SDK event into its text (``None``
    or ``""`` skips it). ``error_marker(exc)`` returns the text (or bytes)
    appended on failure (``None`` writes none).
    """

    def __init__(
        self,
        content_type: str = "text/plain; charset=utf-8",
        *,
        transform: Callable[[Any], str | bytes | None] | None = None,
        error_marker: ErrorMarker | None = default_text_error,
    ) -> None:
        self.content_type = content_type
        self.transform = transform
        self.error_marker = error_marker

    @staticmethod
    def _bytes(value: Any) -> bytes:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"a text stream takes str or bytes chunks, not {type(value).__name__}")

    def encode(self, chunk: Any) -> list[bytes]:
        if self.transform is not None:
            chunk = self.transform(chunk)
        if chunk is None:
            return []
        data = self._bytes(chunk)
        return [data] if data else []

    def join(self, units: list[bytes]) -> bytes:
        return b"".join(units)

    def error_units(self, error: BaseException) -> list[bytes]:
        if self.error_marker is None:
            return []
        marker = self.error_marker(error)
        if marker is None:
            return []
        data = self._bytes(marker)
        return [data] if data else []


def resolve_encoding(encoding: Encoding | Callable[[Any], Iterable[Any] | None] | str) -> Encoding:
    """``"json"``, ``"text"``, an :class:`Encoding`, or a callable that turns
    a chunk into the JSON messages to append."""
    if encoding == "json":
        return JSONMessages()
    if encoding == "text":
        return Text()
    if isinstance(encoding, Encoding):
        return encoding
    if callable(encoding):
        return JSONMessages(encoding)
    raise TypeError(f"unknown encoding {encoding!r}: use 'json', 'text', an Encoding or a callable")
