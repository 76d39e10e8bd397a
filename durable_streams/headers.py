"""The protocol's request headers (spec sections 4 and 5): one parser per rule.

Every parser takes the raw header value (None when absent) and returns the
typed value or raises :class:`~durable_streams.exceptions.BadRequest`, so the
HTTP views, the access policy and the management command read a header the
same way.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from . import offsets
from .exceptions import BadRequest

if TYPE_CHECKING:
    from django.http import HttpRequest

# Non-negative decimal integers without sign, leading zeros or exponent.
_INTEGER = re.compile(r"0|[1-9][0-9]*")
# Beyond this a TTL is surely a mistake, and timedelta would overflow anyway.
MAX_TTL = 100 * 365 * 24 * 3600
# RFC 3339 date-time: a time zone is required; "T", "t" or a space between.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def get(request: HttpRequest, name: str) -> str | None:
    """``request.headers.get(name)``, read from ``request.META``.

    ``request.headers`` is built from every entry of ``META`` on first use:
    more work than the few headers a stream request reads.
    """
    return request.META.get(_meta_key(name))


@functools.cache
def _meta_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def flag(value: str | None) -> bool:
    """Presence headers (``Stream-Closed``) count only with the value ``true`` (spec 4.1)."""
    return value is not None and value.strip().lower() == "true"


def parse_int(name: str, value: str, *, maximum: int = offsets.MAX_POSITION) -> int:
    """A non-negative decimal integer header: ASCII digits, no sign or leading zeros,
    at most ``maximum`` (by default the largest stream position)."""
    value = value.strip()
    if not _INTEGER.fullmatch(value):
        raise BadRequest(f"{name} must be a non-negative integer")
    # Compared by length first: int() refuses more than 4,300 digits
    # (sys.get_int_max_str_digits), and a longer header is out of range anyway.
    if len(value) > len(str(maximum)) or int(value) > maximum:
        raise BadRequest(f"{name} must be at most {maximum}")
    return int(value)


def parse_ttl(value: str | None) -> int | None:
    """``Stream-TTL``: seconds of a sliding time to live."""
    if value is None:
        return None
    return parse_int("Stream-TTL", value, maximum=MAX_TTL)


def parse_expires_at(value: str | None) -> dt.datetime | None:
    """``Stream-Expires-At``: an RFC 3339 timestamp with its time zone.

    The one rule for an absolute expiry, wherever it comes from.
    """
    if value is None:
        return None
    value = value.strip()
    if not _RFC3339.fullmatch(value):
        raise BadRequest("Stream-Expires-At must be an RFC 3339 timestamp")
    try:
        parsed = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        # Stored in UTC: it must still be a representable instant there.
        parsed.astimezone(dt.UTC)
    except ValueError:
        raise BadRequest("Stream-Expires-At must be an RFC 3339 timestamp") from None
    except OverflowError:
        raise BadRequest("Stream-Expires-At is out of range") from None
    return parsed


def format_expires_at(value: dt.datetime) -> str:
    """The ``Stream-Expires-At`` a response carries: RFC 3339 in UTC."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def fork_source(value: str | None, request_path: str, stream_path: str) -> str | None:
    """The stream path ``Stream-Forked-From`` names, or None without the header.

    The header is a URL path on this server: it must start with the stream
    prefix of the request (``request_path`` minus ``stream_path``) and name a
    stream below it. Raises 400 otherwise.
    """
    if value is None:
        return None
    source = unquote(value.strip())
    prefix = request_path[: len(request_path) - len(stream_path)]
    if not source.startswith(prefix) or len(source) == len(prefix):
        raise BadRequest("Stream-Forked-From must be the path of a stream on this server")
    return source[len(prefix) :]


def fork_offset(value: str | None) -> int | None:
    """``Stream-Fork-Offset``: a position (``-1`` or a token; not ``now``)."""
    if value is None:
        return None
    position = offsets.parse(value.strip())
    if position is None:
        raise BadRequest("Stream-Fork-Offset must be an offset")
    return position
