"""Content types and JSON mode (spec section 9).

A request body becomes a :class:`Payload`: the bytes to store plus, in JSON
mode, the byte offset of every message. JSON bodies are validated and
flattened one array level here, before any lock is taken; each message keeps
its original text, so numbers and unicode escapes round-trip unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .exceptions import BadRequest

JSON = "application/json"
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_WS = re.compile(r"[ \t\n\r]*")


def media_type(content_type: str) -> str:
    """The media type without parameters, lower-cased (``text/plain``)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    return media_type(content_type) == JSON


def same_type(a: str, b: str) -> bool:
    """Whether two Content-Type values name the same stream type."""
    return media_type(a) == media_type(b)


def is_text(content_type: str) -> bool:
    """Whether SSE may carry this type as UTF-8 text (else base64, spec 5.8)."""
    mt = media_type(content_type)
    return mt.startswith("text/") or mt == JSON


# The width of the stream's content_type column.
MAX_CONTENT_TYPE = 255


def valid_content_type(content_type: str) -> bool:
    if len(content_type) > MAX_CONTENT_TYPE:
        return False
    mt = media_type(content_type)
    if mt.count("/") != 1:
        return False
    kind, sub = mt.split("/")
    return bool(kind) and bool(sub) and all(c.isprintable() and c != " " for c in mt)


@dataclass(frozen=True)
class Payload:
    """Bytes to append and how many units (bytes or JSON messages) they hold."""

    data: bytes
    units: int
    boundaries: list[int] | None = None

    @classmethod
    def raw(cls, data: bytes) -> Payload:
        return cls(data=data, units=len(data))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# Numbers are checked by the scanner's grammar but never converted: only each
# message's source text is kept, and int() would refuse a literal of more than
# 4,300 digits (sys.get_int_max_str_digits) that is still valid JSON.
_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_int=str, parse_float=str)


def parse_json(body: bytes, *, allow_empty: bool) -> Payload:
    """Validate a JSON body and flatten one level of array (spec 9.1.2).

    ``allow_empty`` admits ``[]`` (valid on PUT, a 400 on POST per 9.1.3).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8") from None
    try:
        parts = _split_messages(text)
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if not parts and not allow_empty:
        raise BadRequest("empty JSON array: nothing to append")
    encoded = [p.encode("utf-8") for p in parts]
    boundaries: list[int] = []
    pos = 0
    for chunk in encoded:
        boundaries.append(pos)
        pos += len(chunk) + 1
    return Payload(data=b",".join(encoded), units=len(encoded), boundaries=boundaries)


def _split_messages(s: str) -> list[str]:
    """The top-level messages of a JSON text, each as its exact source text."""
    i = _WS.match(s).end()
    if i == len(s):
        raise ValueError("empty body")
    if s[i] != "[":
        _, end = _decoder.raw_decode(s, i)
        if _WS.match(s, end).end() != len(s):
            raise ValueError("trailing data")
        return [s[i:end]]
    parts: list[str] = []
    j = _WS.match(s, i + 1).end()
    if j < len(s) and s[j] == "]":
        j += 1
    else:
        while True:
            _, end = _decoder.raw_decode(s, j)
            parts.append(s[j:end])
            j = _WS.match(s, end).end()
            if j >= len(s):
                raise ValueError("unterminated array")
            if s[j] == ",":
                j = _WS.match(s, j + 1).end()
                continue
            if s[j] == "]":
                j += 1
                break
            raise ValueError("expected , or ]")
    if _WS.match(s, j).end() != len(s):
        raise ValueError("trailing data")
    return parts


def parse_body(content_type: str, body: bytes, *, allow_empty_json: bool) -> Payload:
    """Turn a request body into a payload for a stream of ``content_type``."""
    if is_json(content_type):
        return parse_json(body, allow_empty=allow_empty_json)
    return Payload.raw(body)
