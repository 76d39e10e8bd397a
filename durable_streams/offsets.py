"""Offset tokens (spec section 8).

A stream position is a non-negative integer counted in the stream's units:
bytes for byte streams, messages for ``application/json`` streams. Positions
are minted under the stream's row lock inside the append transaction, so they
are gap-free per stream and never depend on commit order or clocks. Forks
share their source's offset space, so a position means the same thing on both.

The token is the position zero-padded to a fixed width: lexicographic order is
numeric order, and it never collides with the sentinels ``-1`` and ``now``.
"""

from __future__ import annotations

WIDTH = 20
MAX_POSITION = 10**WIDTH - 1

BEGINNING = "-1"
NOW = "now"


class InvalidOffset(ValueError):
    """The offset token is malformed."""


def encode(position: int) -> str:
    """Return the opaque token for ``position``."""
    return f"{position:0{WIDTH}d}"


def decode(token: str) -> int:
    """Return the position of a token minted by :func:`encode`.

    Raises :class:`InvalidOffset` for anything else; sentinels are handled by
    the caller.
    """
    if len(token) != WIDTH or not token.isascii() or not token.isdigit():
        raise InvalidOffset("malformed offset")
    return int(token)
