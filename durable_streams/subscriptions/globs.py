"""Glob patterns over stream-root-relative paths (spec 6.2).

``*`` matches exactly one path segment, ``**`` zero or more; every other
segment matches itself. A pattern compiles to one regular expression that
means the same in Python's ``re`` and in PostgreSQL's ARE syntax, because the
append trigger links newly matching streams inside the append transaction.
Both match it against ``"/" + path``: each segment then brings its own
leading slash, which makes "zero segments" for ``**`` a plain ``*`` repeat.
"""

from __future__ import annotations

import functools
import re

from .errors import invalid

_META = set("\\^$.|?*+()[]{}")
_SEGMENT = "/[^/]+"


def normalize(path: str) -> str:
    """A stream-root-relative path without leading or trailing slashes."""
    return path.strip("/")


def validate(pattern: object) -> str:
    """The normalised pattern; raises INVALID_REQUEST for a bad glob."""
    if not isinstance(pattern, str):
        raise invalid("pattern must be a string")
    normalized = normalize(pattern)
    if not normalized:
        raise invalid("pattern must not be empty")
    for segment in normalized.split("/"):
        if not segment:
            raise invalid("pattern has an empty path segment")
        if "*" in segment and segment not in ("*", "**"):
            raise invalid(f"bad glob segment {segment!r}: '*' and '**' must be whole segments")
        if any(ord(ch) < 32 for ch in segment):
            raise invalid("pattern contains control characters")
    if normalized.split("/")[0] == "__ds":
        raise invalid("pattern must not cover the reserved __ds prefix")
    return normalized


def _literal(segment: str) -> str:
    return "".join("\\" + ch if ch in _META else ch for ch in segment)


def to_regex(pattern: str) -> str:
    """The regular expression (Python and PostgreSQL) of a validated pattern,
    to match against ``"/" + path``."""
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(f"(?:{_SEGMENT})*")
        elif segment == "*":
            parts.append(_SEGMENT)
        else:
            parts.append("/" + _literal(segment))
    return r"\A" + "".join(parts) + r"\Z"


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(to_regex(pattern))


def matches(pattern: str, path: str) -> bool:
    """Whether the validated ``pattern`` matches stream ``path``."""
    return _compiled(pattern).match("/" + normalize(path)) is not None
