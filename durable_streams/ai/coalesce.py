"""The batching rule of the token writer: linger time and batch size.

The first unit buffered starts the linger clock; the batch is due when the
linger time has passed since then, or as soon as it holds ``batch_size``
units. So a generation producing 50 tokens a second with a 50 ms linger makes
about 20 appends a second, never more than one per linger interval while the
appends keep up. Pure logic, driven by the caller's clock.
"""

from __future__ import annotations


class Coalescer:
    """Buffered units and when they are due."""

    def __init__(self, linger: float, batch_size: int) -> None:
        if linger < 0:
            raise ValueError("linger must be >= 0 seconds")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.linger = linger
        self.batch_size = batch_size
        self._units: list[bytes] = []
        self._since: float | None = None

    def __len__(self) -> int:
        return len(self._units)

    def add(self, units: list[bytes], now: float) -> None:
        if not units:
            return
        if not self._units:
            self._since = now
        self._units.extend(units)

    @property
    def full(self) -> bool:
        return len(self._units) >= self.batch_size

    def due_at(self) -> float | None:
        """When the buffered units must be appended (None: nothing buffered)."""
        if not self._units:
            return None
        assert self._since is not None
        return self._since + self.linger

    def due(self, now: float) -> bool:
        due_at = self.due_at()
        return due_at is not None and (self.full or now >= due_at)

    def take(self, limit: int | None = None) -> list[bytes]:
        """The next batch (at most ``batch_size`` units, and at most ``limit``),
        oldest first.

        Units left behind keep their start time: they are due at once.
        """
        size = self.batch_size if limit is None else min(limit, self.batch_size)
        batch, self._units = self._units[:size], self._units[size:]
        if not self._units:
            self._since = None
        return batch

    def take_all(self) -> list[bytes]:
        batch, self._units, self._since = self._units, [], None
        return batch
