"""Forks: which stream of a fork's chain stores each range of its positions.

A fork shares its source's offsets below the fork position (spec 4.2) and
nothing is copied, so a read of a fork stitches together the layers of its
chain of ancestors. A fork's ancestry (ids and fork positions) never changes,
and an ancestor's rows outlive every fork that reads them, so chains are
cached per process.
"""

from __future__ import annotations

from .drivers import Op, Q
from .schema import STREAM
from .types import StreamMeta

Chain = list[tuple[int, int | None]]

_chains: dict[int, Chain] = {}
_CHAIN_CACHE_SIZE = 10_000


def forget(stream_id: int) -> None:
    """Drop a purged stream's cached chain."""
    _chains.pop(stream_id, None)


def chain(meta: StreamMeta) -> Op[Chain]:
    """``[(stream id, fork position)]`` from ``meta`` up to its root stream."""
    if meta.forked_from_id is None:
        return [(meta.id, None)]
    found = _chains.get(meta.id)
    if found is None:
        rows = yield Q(
            f"WITH RECURSIVE chain(id, forked_from_id, fork_offset, depth) AS ("
            f"  SELECT id, forked_from_id, fork_offset, 0 FROM {STREAM} WHERE id = %s"
            f"  UNION ALL"
            f"  SELECT s.id, s.forked_from_id, s.fork_offset, c.depth + 1"
            f"  FROM {STREAM} s JOIN chain c ON s.id = c.forked_from_id"
            f") SELECT id, fork_offset FROM chain ORDER BY depth",
            [meta.id],
            "all",
        )
        found = [(row[0], row[1]) for row in rows]
        if len(_chains) >= _CHAIN_CACHE_SIZE:
            _chains.clear()
        _chains[meta.id] = found
    return found


def layers(meta: StreamMeta) -> Op[list[tuple[int, int, int]]]:
    """``[(stream id, lo, hi)]``: which stream stores each range of positions
    below the stream's tail, in position order."""
    hi = meta.tail
    found = []
    for stream_id, fork_offset in (yield from chain(meta)):
        lo = fork_offset or 0
        if lo < hi:
            found.append((stream_id, lo, hi))
            hi = lo
    found.reverse()
    return found
