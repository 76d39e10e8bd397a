"""A minimal HTTP/1.1 client on asyncio, written for load generation.

General-purpose clients (httpx, aiohttp) spend more CPU per request than a
small server answers in, so the load generator would measure itself. This one
does only what the benchmark needs: keep-alive connections, requests built as
bytes (optionally once, then reused), responses with ``Content-Length`` or
chunked bodies, and Server-Sent Events on a protocol object that parses in
``data_received`` without a coroutine switch per event (10,000 readers each
receiving 10 events a second is 100,000 events a second in a few processes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

# Node closes idle keep-alive connections after 5 s; reconnect before that.
IDLE_RECONNECT = 4.0
_READ_LIMIT = 4 * 1024 * 1024


class HTTPError(Exception):
    """A connection or framing failure (never an HTTP status)."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def build_request(
    method: str,
    target: str,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    """Request head (and body) as bytes; a body always gets a Content-Length."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    if headers:
        lines.extend(f"{k}: {v}" for k, v in headers.items())
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of a response head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def connect(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=_READ_LIMIT
        )
        self.last_used = time.monotonic()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def build(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> bytes:
        return build_request(method, target, self.authority, headers, body)

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        return await self.send(
            self.build(method, target, headers, body), head_only=method == "HEAD"
        )

    async def send(self, raw: bytes, *, head_only: bool = False) -> Response:
        """Send a prebuilt request and read its response."""
        if self.writer is None or time.monotonic() - self.last_used > IDLE_RECONNECT:
            await self.connect()
        assert self.writer is not None
        try:
            self.writer.write(raw)
            response = await self._read_response(head_only)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            raise HTTPError(f"{type(e).__name__}: {e}") from e
        except BaseException:
            self.close()  # cancelled mid-response: the connection is unusable
            raise
        self.last_used = time.monotonic()
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    async def _read_response(self, head_only: bool) -> Response:
        reader = self.reader
        assert reader is not None
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = parse_head(head[:-4])
        if head_only or status in (204, 304) or status < 200:
            return Response(status, headers, b"")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    # trailers, if any, end with an empty line
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                parts.append(await reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts) if len(parts) != 1 else parts[0][:-2]
            return Response(status, headers, body)
        length = headers.get("content-length")
        if length is not None:
            n = int(length)
            return Response(status, headers, await reader.readexactly(n) if n else b"")
        body = await reader.read()  # delimited by the connection's end
        self.close()
        return Response(status, headers, body)


# --------------------------------------------------------------------------- SSE


class SSEProtocol(asyncio.Protocol):
    """One SSE GET on its own connection, parsed as bytes arrive.

    ``on_event(event_type, data)`` is called for every complete event with the
    ``data:`` lines joined by ``\\n`` (comments and empty events skipped).
    ``headers_future`` resolves with (status, headers) once the head arrives;
    ``done`` resolves when the connection ends (with None, or the error).
    """

    def __init__(self, request: bytes, on_event: Callable[[bytes, bytes], None]) -> None:
        self.request = request
        self.on_event = on_event
        loop = asyncio.get_running_loop()
        self.headers_future: asyncio.Future[tuple[int, dict[str, str]]] = loop.create_future()
        self.done: asyncio.Future[BaseException | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._in_body = False
        self._chunked = False
        self._cbuf = bytearray()  # undecoded chunked framing
        self._need = -1  # bytes of chunk data (+ CRLF) still expected, -1 = size line next
        self._ebuf = b""  # partial SSE event text
        self.body_complete = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.headers_future.done():
            self.headers_future.set_exception(exc or HTTPError("closed before response head"))
        if not self.done.done():
            self.done.set_result(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                status, headers = parse_head(bytes(self._head[:end]))
            except HTTPError as e:
                self.headers_future.set_exception(e)
                self.close()
                return
            data = bytes(self._head[end + 4 :])
            self._head = bytearray()
            self._in_body = True
            self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            self.headers_future.set_result((status, headers))
            if status != 200:
                self.close()
                return
            if not data:
                return
        if self._chunked:
            self._dechunk(data)
        else:
            self._feed(data)

    def _dechunk(self, data: bytes) -> None:
        buf = self._cbuf
        buf += data
        pos = 0
        n = len(buf)
        out = []
        while pos < n:
            if self._need < 0:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.body_complete = True
                    pos = n
                    break
                self._need = size + 2
            take = min(self._need, n - pos)
            # chunk data is everything but its closing CRLF
            data_end = pos + min(take, max(0, self._need - 2))
            if data_end > pos:
                out.append(bytes(buf[pos:data_end]))
            self._need -= take
            pos += take
            if self._need == 0:
                self._need = -1
        del buf[:pos]
        if out:
            self._feed(out[0] if len(out) == 1 else b"".join(out))
        if self.body_complete:
            self.close()

    def _feed(self, data: bytes) -> None:
        if self._ebuf:
            data = self._ebuf + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        start = 0
        on_event = self.on_event
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            block = data[start:end]
            start = end + 2
            etype = b"message"
            datas = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    v = line[5:]
                    datas.append(v[1:] if v[:1] == b" " else v)
                elif line.startswith(b"event:"):
                    etype = line[6:].strip()
            if datas:
                on_event(etype, datas[0] if len(datas) == 1 else b"\n".join(datas))
        self._ebuf = data[start:]
