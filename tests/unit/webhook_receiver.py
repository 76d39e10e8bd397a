"""A real HTTP server on loopback that records webhook requests and answers as told."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time() when the request arrived


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class LoopbackReceiver:
    """``with LoopbackReceiver() as r:`` serves on 127.0.0.1; ``r.requests`` lists
    what arrived. ``reply()`` sets the answer; ``fail_first(n)`` answers 503 n times."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._reply = _Reply()
        self._failures_left = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.time(),
                        )
                    )
                    failing = receiver._failures_left > 0
                    if failing:
                        receiver._failures_left -= 1
                    reply = _Reply(503, b"busy") if failing else receiver._reply
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def reply(
        self,
        status: int = 200,
        body: bytes = b"{}",
        *,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self._reply = _Reply(status, body, headers or {}, delay)

    def fail_first(self, count: int) -> None:
        self._failures_left = count

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} of {count} webhook requests arrived")
            time.sleep(0.02)

    def __enter__(self) -> LoopbackReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
