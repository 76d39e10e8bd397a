"""Offset tokens (spec section 8).

A stream position is a non-negative integer counted in the stream's units:
bytes for byte streams, messages for ``application/json`` streams. Positions
are minted under the stream's row lock inside the append transaction, so they
are gap-free per stream and never depend on commit order or clocks. Forks
share their source's offset space, so a position means the same thing on both.

The token is the position as 32 zero-padded digits in two groups of 16
(``0000000000000000_0000000000000042``): fixed width, so lexicographic order is
numeric order; URL-safe; never one of the sentinels ``-1`` and ``now``; and
the same shape as the reference server's, which clients and tests expect.
"""

from __future__ import annotations

import re

from .exceptions import BadRequest

_GROUP = 10**16
MAX_POSITION = _GROUP * _GROUP - 1
_TOKEN = re.compile(r"[0-9]{16}_[0-9]{16}")

BEGINNING = "-1"
NOW = "now"


class InvalidOffset(BadRequest, ValueError):
    """The offset token is malformed (a 400 over HTTP; a ValueError in Python)."""


def encode(position: int) -> str:
    """Return the opaque token for ``position``."""
    high, low = divmod(position, _GROUP)
    return f"{high:016d}_{low:016d}"


def decode(token: str) -> int:
    """Return the position of a token minted by :func:`encode`.

    Raises :class:`InvalidOffset` for anything else; sentinels are handled by
    the caller.
    """
    if not _TOKEN.fullmatch(token):
        raise InvalidOffset("malformed offset")
    return int(token[:16]) * _GROUP + int(token[17:])


def parse(token: str | None) -> int | None:
    """The position a client's offset names: the one rule for every caller.

    ``-1`` (and no offset at all) is the beginning, 0; ``now`` is the tail,
    returned as None because only a read of the stream knows where that is;
    anything else must be a token minted by :func:`encode`, else
    :class:`InvalidOffset`.
    """
    if token is None or token == BEGINNING:
        return 0
    if token == NOW:
        return None
    return decode(token)
