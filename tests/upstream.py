"""A small HTTP/1.1 upstream on loopback for the proxy and resumable-view tests.

Runs an asyncio server (stdlib only) on its own thread. Endpoints:

* ``/sse?n=N&interval=S`` streams N SSE events (``data: <i>``), S seconds apart;
* ``/sse-fail?n=N&interval=S`` the same, then drops the connection mid-body;
* ``/stall?n=N&hold=S`` sends N events, then nothing for S seconds (30);
* ``/status?code=C&size=B`` answers C with a text body of B bytes (default short);
* ``/redirect`` answers 302 to ``/sse``;
* ``/slow-headers?delay=S`` waits S seconds before its headers;
* ``/echo`` answers the request it received as JSON.
"""

from __future__ import annotations

import asyncio
import json
import threading
from urllib.parse import parse_qs, urlsplit


class Upstream:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.connections = 0  # requests received
        self.disconnected = 0  # streaming responses whose client went away
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Upstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("upstream did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cancel_handlers(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _cancel_handlers(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers: list[tuple[str, str]] = []
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers.append((name.strip(), value.strip()))
            length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
            body = await reader.readexactly(length) if length else b""
            self.connections += 1
            await self._route(method, target, headers, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _route(self, method, target, headers, body, writer) -> None:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path in ("/sse", "/sse-fail", "/stall"):
            await self._sse(path, query, writer)
        elif path == "/status":
            code = int(query.get("code", "500"))
            size = int(query.get("size", "0"))
            text = (b"x" * size) if size else f"upstream says {code}".encode()
            await self._plain(writer, code, text)
        elif path == "/redirect":
            await self._plain(writer, 302, b"", extra=[("Location", "/sse")])
        elif path == "/slow-headers":
            await asyncio.sleep(float(query.get("delay", "5")))
            await self._plain(writer, 200, b"late")
        elif path == "/echo":
            echo = {
                "method": method,
                "path": target,
                "headers": [[k, v] for k, v in headers],
                "body": body.decode("utf-8", "replace"),
            }
            await self._plain(writer, 200, json.dumps(echo).encode(), "application/json")
        else:
            await self._plain(writer, 404, b"no such upstream path")

    async def _plain(self, writer, code, body, content_type="text/plain", extra=()) -> None:
        head = [f"HTTP/1.1 {code} X", f"Content-Type: {content_type}"]
        head += [f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in extra]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _sse(self, path, query, writer) -> None:
        n = int(query.get("n", "10"))
        interval = float(query.get("interval", "0.05"))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        try:
            for i in range(n):
                event = f"data: {i}\n\n".encode()
                writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                await writer.drain()
                await asyncio.sleep(interval)
            if path == "/sse-fail":
                writer.transport.abort()  # no final chunk: the body is cut short
                return
            if path == "/stall":
                # Bounded: the test ends the request (abort, timeout) long before.
                await asyncio.sleep(float(query.get("hold", "30")))
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.disconnected += 1
