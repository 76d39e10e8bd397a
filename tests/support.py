"""Helpers shared by the test modules: names, server processes, HTTP reads."""

from __future__ import annotations

import codecs
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = "tests.settings"


def unique(prefix: str = "s") -> str:
    """A stream path no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(settings_dict: dict) -> str:
    """A ``DATABASE_URL`` for the database Django is connected to."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = user + (":" + quote(password, safe="") if password else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


def child_env(db_url: str, **extra: str) -> dict[str, str]:
    """Environment for a child process using the test database and test settings."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=db_url,
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        DJANGO_DEBUG="0",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class ServerProcess:
    """One daphne process serving the example project with the test settings."""

    def __init__(
        self,
        db_url: str,
        log_dir: Path,
        app: str = "example_project.asgi:application",
        *,
        server: str = "daphne",
        **env: str,
    ) -> None:
        self.db_url = db_url
        self.app = app
        self.server = server  # "daphne" or "uvicorn"
        self.log_dir = log_dir
        self.extra_env = env
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path: Path | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream_url(self, path: str) -> str:
        return f"{self.url}/v1/stream/{path}"

    def argv(self) -> list[str]:
        """The server's command line (after ``python -m``)."""
        if self.server == "uvicorn":
            return [
                "uvicorn",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                self.app,
            ]
        return ["daphne", "-b", "127.0.0.1", "-p", str(self.port), self.app]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        last_error = ""
        for _attempt in range(3):  # the free port may be taken in between
            self.starts += 1
            self.port = free_port()
            self.log_path = self.log_dir / f"{self.argv()[0]}-{self.port}-{self.starts}.log"
            log = open(self.log_path, "wb")  # the child writes to it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.argv()],
                cwd=ROOT,
                env=child_env(self.db_url, **self.extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
        raise RuntimeError(f"{self.argv()[0]} did not start: {last_error}")

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                httpx.head(self.stream_url("__ready__"), timeout=2)
                return  # any answer (404) means it serves
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"no answer within {timeout}s: {self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing, like a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


HEALTH_PATH = "/api/durable-streams/health/"


def waiting_readers(base_url: str) -> int:
    """How many live readers wait in the server's process (its health endpoint)."""
    response = httpx.get(base_url + HEALTH_PATH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["listener"]["waiting_readers"]


def await_waiting_readers(base_url: str, count: int, timeout: float = 30.0) -> None:
    """Barrier: return once exactly ``count`` live readers wait in the server.

    Tests start their readers on a quiet server (``count=0`` first), so the
    count is theirs: an append made after this barrier reaches readers that
    were already waiting, never ones that arrive late and find the data.
    """
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = waiting_readers(base_url)
        if seen == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{seen} readers waiting, not {count}, after {timeout}s")


def read_all(client: httpx.Client, url: str, offset: str = "-1", max_requests: int = 10_000):
    """Follow ``Stream-Next-Offset`` from ``offset`` until up to date.

    Returns ``(body, next_offset, responses)``.
    """
    body = b""
    responses = []
    for _ in range(max_requests):
        response = client.get(url, params={"offset": offset})
        assert response.status_code == 200, (response.status_code, response.text)
        responses.append(response)
        body += response.content
        offset = response.headers["Stream-Next-Offset"]
        if response.headers.get("Stream-Up-To-Date") == "true":
            return body, offset, responses
    raise AssertionError("read did not reach the tail")


def read_stream(
    path: str, offset: str = "-1", max_bytes: int | None = None, max_reads: int = 100_000
):
    """Read a stream in-process from ``offset`` to its tail, chunk by chunk.

    Returns the list of :class:`~durable_streams.storage.ReadResult` chunks.
    """
    from durable_streams import api

    chunks = []
    for _ in range(max_reads):
        result = api.read(path, offset, max_bytes=max_bytes)
        chunks.append(result)
        offset = result.next_offset
        if result.up_to_date:
            return chunks
    raise AssertionError("read did not reach the tail")


def read_bytes(path: str, offset: str = "-1", max_bytes: int | None = None) -> bytes:
    return b"".join(chunk.body for chunk in read_stream(path, offset, max_bytes))


class SSE:
    """Incremental Server-Sent Events parser over an httpx streaming response.

    ``events()`` yields ``(event, data)`` for dispatched events and
    ``(":", comment)`` for comment lines, per the SSE rules (one space after
    the colon is dropped; data lines are joined with newlines). It stops at
    the end of the response or at ``deadline`` (monotonic seconds).
    """

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        self.response = response
        self.deadline = deadline
        self.raw = b""

    def events(self):
        decoder = codecs.getincrementaldecoder("utf-8")()
        buffer = ""
        event, data = "", []
        for chunk in self.response.iter_raw():
            self.raw += chunk
            buffer += decoder.decode(chunk)
            *lines, buffer = buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            for line in lines:
                if line == "":
                    if data:
                        yield (event or "message"), "\n".join(data)
                    event, data = "", []
                elif line.startswith(":"):
                    yield ":", line[1:].removeprefix(" ")
                else:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)
            if time.monotonic() > self.deadline:
                raise AssertionError(f"SSE deadline passed; received so far: {self.raw[-500:]!r}")


def raw_http(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes as one HTTP/1.1 request; return (status, whole response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        response = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            response += data
            head, sep, body = response.partition(b"\r\n\r\n")
            if sep:
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")[1:]
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
    status_line = response.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), response


def absolute_form_append_and_read(port: int, path: str) -> bytes:
    """POST ``b"b"`` to stream ``path`` and read it back, both with absolute-form
    request targets (``POST http://127.0.0.1:port/v1/stream/path HTTP/1.1``,
    RFC 9112 3.2.2) over a raw socket; return the read's body (asserting the
    statuses: 204, then 200)."""
    target = f"http://127.0.0.1:{port}/v1/stream/{path}"
    status, response = raw_http(
        port,
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        "Content-Length: 1\r\nConnection: close\r\n\r\nb".encode(),
    )
    assert status == 204, response[:300]
    status, response = raw_http(
        port,
        f"GET {target}?offset=-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 200, response[:300]
    return response.partition(b"\r\n\r\n")[2]


class Worker:
    """A child process running ``tests.acceptance._worker`` (see its docstring)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        import queue
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.acceptance._worker", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str:
        import queue

        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker said nothing within {timeout}s") from None
        if line is None:
            raise AssertionError(f"worker exited: {self.stderr()}")
        return line

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.next_line(timeout) == "ready"

    def go(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def results(self, count: int, timeout: float = 60) -> list[dict]:
        import json

        deadline = time.monotonic() + timeout
        return [
            json.loads(self.next_line(max(0.1, deadline - time.monotonic()))) for _ in range(count)
        ]

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read() if self.proc.stderr else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def close_executor_connections() -> None:
    """Close the Django connections held by durable_streams' executor threads.

    The async API twins run on those long-lived threads, which keep their
    connections; closed here so that later tests without database access do
    not trip pytest-django's blocker on them, and connections do not pile up.
    """
    import contextlib
    import threading
    from concurrent.futures import wait

    from django.db import connections

    from durable_streams import executor

    pool = getattr(executor, "_pool", None)
    if pool is None:
        return
    workers = pool._max_workers
    barrier = threading.Barrier(workers, timeout=10)

    def close() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()  # every worker thread takes exactly one of these
        connections.close_all()

    wait([pool.submit(close) for _ in range(workers)], timeout=30)


def database_sessions(client_ports: list[int] | None = None) -> int:
    """Sessions connected to the test database other than this thread's own
    Django connection (which counts them); with ``client_ports``, only those
    whose client port is one of them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND (%s::int[] IS NULL OR client_port = ANY(%s))",
            [client_ports, client_ports],
        )
        return cursor.fetchone()[0]


async def lock_waits(conn, event: str | None = None) -> int:
    """Sessions of this database waiting for a lock (of kind ``event``:
    'relation', 'tuple', ...), counted on ``conn``, an async psycopg connection."""
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND (%s::text IS NULL OR wait_event = %s)",
        [event, event],
    )
    return (await cur.fetchone())[0]
