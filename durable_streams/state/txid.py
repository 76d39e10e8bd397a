"""Transaction ids: stamped as ``headers.txid`` on every event a block of work emits.

A client that writes through your API sends a txid with the request (the
``X-Txid`` header by default) and then waits until an event carrying it
arrives on the stream: the TypeScript StreamDB ``awaitTxId`` pattern. The id
lives in a context variable, so it follows the request into
``sync_to_async`` threads and async tasks.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from ..conf import ds_settings

__all__ = ["TxidMiddleware", "current_txid", "new_txid", "txid"]

MAX_TXID_LENGTH = 128
# Visible ASCII: safe in an HTTP header and in JSON, non-empty as the schema wants.
_VALID = re.compile(rf"[\x21-\x7e]{{1,{MAX_TXID_LENGTH}}}")

_current: ContextVar[str | None] = ContextVar("durable_streams_txid", default=None)


def new_txid() -> str:
    """A fresh random txid (a UUID, the form TypeScript clients generate)."""
    return str(uuid.uuid4())


def check_txid(value: object) -> str:
    """``value`` if it is a usable txid, else ValueError."""
    if not isinstance(value, str) or not _VALID.fullmatch(value):
        raise ValueError(
            f"a txid must be 1-{MAX_TXID_LENGTH} visible ASCII characters, not {value!r}"
        )
    return value


def current_txid() -> str | None:
    """The txid stamped on events emitted now, if any."""
    return _current.get()


@contextlib.contextmanager
def txid(value: str | None = None) -> Iterator[str]:
    """Stamp ``value`` (a new random id if None) on every event emitted inside
    the block; yields the id. Blocks nest: the innermost id wins."""
    value = new_txid() if value is None else check_txid(value)
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)


class TxidMiddleware:
    """Runs each request under a txid: the one in the request's txid header
    (``DURABLE_STREAMS["STATE_TXID_HEADER"]``, default ``X-Txid``), else a new
    one. The response carries the txid in the same header, so a client that
    sent none can still await its write. A malformed header answers 400.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _txid_for(self, request: HttpRequest) -> tuple[str | None, str]:
        header = ds_settings.STATE_TXID_HEADER
        raw = request.headers.get(header)
        if raw is None:
            return new_txid(), header
        try:
            return check_txid(raw), header
        except ValueError as exc:
            return None, f"invalid {header} header: {exc}"

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        value, header = self._txid_for(request)
        if value is None:
            return _bad_request(header)
        with txid(value):
            response = self.get_response(request)
        response[header] = value
        return response

    async def __acall__(self, request: HttpRequest):
        value, header = self._txid_for(request)
        if value is None:
            return _bad_request(header)
        with txid(value):
            response = await self.get_response(request)
        response[header] = value
        return response


def _bad_request(message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=400, content_type="text/plain; charset=utf-8")
