"""Materialized state: apply State Protocol events, query entities by type and key.

Consumers read a stream from its beginning (catch-up), then keep following it
(live), applying every event to a :class:`MaterializedState`:

- :func:`catch_up` / :func:`afollow`: in-process, through the storage API;
  ``afollow`` waits for commits with the same LISTEN/NOTIFY wakeups as HTTP
  live readers.
- :func:`catch_up_url` / :func:`follow_url`: any Durable Streams server, over
  HTTP, following ``Stream-Next-Offset`` and long-polling once up to date.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from .. import live, offsets, storage
from ..headers import flag
from . import events

__all__ = [
    "MaterializedState",
    "StreamReadError",
    "afollow",
    "catch_up",
    "catch_up_url",
    "follow_url",
    "materialize",
]

# Txids remembered for has_txid(); the oldest are forgotten past this.
_TXID_MEMORY = 10_000


class StreamReadError(RuntimeError):
    """A stream could not be read over HTTP (status and message of the answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class MaterializedState:
    """Entities by type and key, built by applying events in stream order.

    ``insert`` and ``update`` store the value, ``delete`` removes it,
    ``reset`` clears everything, ``snapshot-start``/``-end`` set
    :attr:`in_snapshot`. Events are validated against the State Protocol
    schema first (``validate=False`` skips that for trusted input).
    ``offset`` is the stream offset after the last applied batch: pass the
    state back to a consumer to resume from there.
    """

    def __init__(self, *, validate: bool = True) -> None:
        self.validate = validate
        self._data: dict[str, dict[str, Any]] = {}
        self._txids: OrderedDict[str, None] = OrderedDict()
        self.offset: str = offsets.BEGINNING
        self.up_to_date = False
        self.closed = False
        self.in_snapshot = False
        self.applied = 0

    def apply(self, event: Any) -> None:
        """Apply one event; InvalidEvent if it is not a State Protocol event."""
        if self.validate:
            events.validate(event)
        headers = event["headers"]
        if "control" in headers:
            control = headers["control"]
            if control == "reset":
                self._data.clear()
            self.in_snapshot = control == "snapshot-start"
        else:
            entities = self._data.setdefault(event["type"], {})
            if headers["operation"] == "delete":
                entities.pop(event["key"], None)
            else:
                entities[event["key"]] = event["value"]
            txid = headers.get("txid")
            if txid is not None:
                self._txids[txid] = None
                self._txids.move_to_end(txid)
                if len(self._txids) > _TXID_MEMORY:
                    self._txids.popitem(last=False)
        self.applied += 1

    def apply_all(self, batch: Iterable[Any]) -> None:
        for event in batch:
            self.apply(event)

    def get(self, type: str, key: str, default: Any = None) -> Any:
        """The value of entity ``type``/``key``, or ``default``."""
        return self._data.get(type, {}).get(key, default)

    def get_type(self, type: str) -> dict[str, Any]:
        """Every entity of ``type``: a copy of ``{key: value}``."""
        return dict(self._data.get(type, {}))

    def list(self, type: str) -> list[Any]:
        """The values of every entity of ``type``, in the order they were first inserted."""
        return list(self._data.get(type, {}).values())

    @property
    def types(self) -> list[str]:
        """Types that have at least one entity."""
        return [t for t, entities in self._data.items() if entities]

    def has_txid(self, txid: str) -> bool:
        """Whether a change stamped with ``txid`` has been applied (recent ones)."""
        return txid in self._txids

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return sum(len(entities) for entities in self._data.values())

    def _advance(self, next_offset: str, up_to_date: bool, closed: bool) -> None:
        self.offset = next_offset
        self.up_to_date = up_to_date
        self.closed = closed


# --- in-process ------------------------------------------------------------------------


def _apply_read(state: MaterializedState, result: storage.ReadResult) -> None:
    if result.units:
        state.apply_all(json.loads(result.body))
    state._advance(result.next_offset, result.up_to_date, result.closed)


def catch_up(path: str, state: MaterializedState | None = None) -> MaterializedState:
    """Read stream ``path`` from ``state.offset`` (default: the beginning) to
    its tail, in-process, applying every event."""
    state = MaterializedState() if state is None else state
    while True:
        result = storage.read(path, offsets.parse(state.offset))
        _apply_read(state, result)
        if result.up_to_date or not result.units:
            return state


async def afollow(
    path: str, state: MaterializedState | None = None, *, wait: float = 30.0
) -> AsyncIterator[MaterializedState]:
    """Catch up with stream ``path`` in-process, then follow it live.

    Yields the state after every read: each chunk of the catch-up, then each
    commit that changed the stream, and every ``wait`` seconds while nothing
    changes (so the caller can decide to stop). Ends when the stream is
    closed; raises NotFound/Gone if it is missing or deleted.
    """
    state = MaterializedState() if state is None else state
    async with live.Follow(path, offsets.parse(state.offset), idle=wait) as reads:
        async for event in reads:
            if event is not live.IDLE:
                _apply_read(state, event)
            yield state


# --- over HTTP ---------------------------------------------------------------------------


def _get(url: str, params: dict[str, str], timeout: float, headers: dict[str, str]):
    query = urllib.parse.urlencode(params)
    request = urllib.request.Request(f"{url}?{query}", headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        message = exc.read().decode("utf-8", "replace").strip() or exc.reason
        raise StreamReadError(exc.code, f"GET {url}: {message}") from None
    with response:
        return response.status, response.headers, response.read()


def follow_url(
    url: str,
    state: MaterializedState | None = None,
    *,
    live: bool = True,
    timeout: float = 90.0,
    headers: dict[str, str] | None = None,
) -> Iterator[MaterializedState]:
    """Catch up with the stream at ``url`` over HTTP, then (if ``live``)
    long-poll it, applying every event.

    Yields the state after every response (so also when a long-poll ends with
    no data, letting the caller stop). Ends at the tail when not ``live``,
    and when the stream is closed. ``timeout`` must exceed the server's
    long-poll timeout. Raises :class:`StreamReadError` for error answers.
    """
    state = MaterializedState() if state is None else state
    headers = {"Accept": "application/json", **(headers or {})}
    cursor: str | None = None
    while True:
        params = {"offset": state.offset}
        if live and state.up_to_date:
            params["live"] = "long-poll"
            if cursor:
                params["cursor"] = cursor
        status, reply, body = _get(url, params, timeout, headers)
        cursor = reply.get("Stream-Cursor") or cursor
        next_offset = reply.get("Stream-Next-Offset")
        if next_offset is None:
            raise StreamReadError(status, f"GET {url}: no Stream-Next-Offset header")
        if status == 200 and body:
            state.apply_all(json.loads(body))
        up_to_date = status == 204 or flag(reply.get("Stream-Up-To-Date"))
        state._advance(next_offset, up_to_date, flag(reply.get("Stream-Closed")))
        yield state
        if state.closed and up_to_date:
            return
        if up_to_date and not live:
            return


def catch_up_url(
    url: str, state: MaterializedState | None = None, **kwargs: Any
) -> MaterializedState:
    """Read the stream at ``url`` to its tail over HTTP, applying every event."""
    state = MaterializedState() if state is None else state
    for _ in follow_url(url, state, live=False, **kwargs):
        pass
    return state


def materialize(source: str, state: MaterializedState | None = None) -> MaterializedState:
    """Catch up with ``source``: an ``http(s)://`` stream URL, or a stream path
    of this project read in-process."""
    if source.startswith(("http://", "https://")):
        return catch_up_url(source, state)
    return catch_up(source, state)
