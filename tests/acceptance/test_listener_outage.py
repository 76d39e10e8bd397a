"""A server whose notification listener loses its database connection: its
waiting readers re-read every FALLBACK_POLL_INTERVAL while it is down, and
every reader re-reads when it reconnects, so a notification lost in the outage
delays a reader but never strands it.

The server reaches Postgres through a loopback TCP proxy of the test's own.
An outage ends the listener's session (pg_terminate_backend) while the proxy
holds new connections unanswered; those the server already has keep working.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from ..support import HEALTH_PATH, ServerProcess, await_waiting_readers, free_port, unique

# Only the servers write; the marker sets up the test database (tests/conftest.py).
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}


class Proxy:
    """Relays loopback TCP connections to Postgres. While ``hold()`` is in
    effect new connections are accepted but get no answer (a connect hangs,
    as to an unreachable host); ``release()`` relays them from then on."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.holding = False
        self._held: list[socket.socket] = []
        self.upstream_ports: set[int] = set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self.holding:
                self._held.append(client)
            else:
                self._relay(client)

    def _relay(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        self.upstream_ports.add(server.getsockname()[1])
        self._sockets += [client, server]
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        held, self._held = self._held, []
        for client in held:
            self._relay(client)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for sock in self._sockets + self._held:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def proxied(test_database_url, tmp_path) -> Iterator:
    """Start a server through a fresh proxy: ``start(**env) -> (server, proxy)``."""
    parts = urlsplit(test_database_url)
    started: list[tuple[ServerProcess, Proxy]] = []

    def start(**env: str) -> tuple[ServerProcess, Proxy]:
        proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        netloc = parts.netloc.rsplit("@", 1)
        auth = netloc[0] + "@" if len(netloc) == 2 else ""
        # A held connect waits 300 s, longer than any long-poll here: no
        # failed reconnect attempt wakes the readers during an outage.
        url = urlunsplit(
            parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}", query="connect_timeout=300")
        )
        server = ServerProcess(url, tmp_path, **env)
        started.append((server, proxy))
        return server.start(), proxy

    yield start
    for server, proxy in started:
        server.stop()
        proxy.close()


def listener_up(server: ServerProcess) -> bool:
    response = httpx.get(server.url + HEALTH_PATH, timeout=10)
    return response.json()["listener"]["ok"]


def cut_the_listener(test_database_url: str, server: ServerProcess, proxy: Proxy) -> float:
    """Hold new connections and end the server's LISTEN session; return once
    the server reports its listener down (its reconnect then hangs). Returns
    the instant (``time.monotonic()``) just before the session was ended."""
    proxy.hold()
    cut_at = time.monotonic()
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            " AND client_port = ANY(%s)",
            [sorted(proxy.upstream_ports)],
        ).fetchone()[0]
    assert ended == 1
    deadline = time.monotonic() + 30
    while listener_up(server):
        assert time.monotonic() < deadline, "the listener did not notice"
        time.sleep(0.1)
    return cut_at


class Outage:
    """A server reaching Postgres through its own proxy, with one long-poll
    (60 s) waiting at the tail of each of its fresh streams, then its listener
    cut. Appends go through the main server, so no notification can reach
    this one while the listener is down."""

    def __init__(self, server: ServerProcess, proxy: Proxy, appends: list[str], pool) -> None:
        self.server = server
        self.proxy = proxy
        self._appends = appends
        self._pool = pool
        self.readers: list = []
        self.cut_at = 0.0

    def append(self, index: int, body: bytes) -> None:
        response = httpx.post(self._appends[index], headers=TEXT, content=body, timeout=10)
        assert response.status_code == 204

    def answers(self, timeout: float = 60) -> list[tuple[int, bytes]]:
        return [(r.status_code, r.content) for r in self.responses(timeout)]

    def responses(self, timeout: float) -> list[httpx.Response]:
        return [reader.result(timeout=timeout) for reader in self.readers]


@pytest.fixture
def outage(http, ds_server, proxied, test_database_url) -> Iterator:
    """``outage(interval, streams=1) -> Outage`` with FALLBACK_POLL_INTERVAL ``interval``."""
    pools: list[ThreadPoolExecutor] = []

    def start(interval: float, streams: int = 1) -> Outage:
        server, proxy = proxied(
            DS_TEST_LONG_POLL_TIMEOUT="60", DS_TEST_FALLBACK_POLL_INTERVAL=str(interval)
        )
        pool = ThreadPoolExecutor(streams)
        pools.append(pool)
        paths = [unique() for _ in range(streams)]
        outage = Outage(server, proxy, [ds_server.stream_url(p) for p in paths], pool)
        for path in paths:
            put = http.put(ds_server.stream_url(path), headers=TEXT)
            params = {"offset": put.headers["Stream-Next-Offset"], "live": "long-poll"}
            outage.readers.append(
                pool.submit(httpx.get, server.stream_url(path), params=params, timeout=90)
            )
        await_waiting_readers(server.url, streams)
        outage.cut_at = cut_the_listener(test_database_url, server, proxy)
        return outage

    yield start
    for pool in pools:
        pool.shutdown(wait=False, cancel_futures=True)


# Longer than it takes to see the listener down (the health check waits up
# to 3 s for it) and append: a reader re-reading sooner is told apart.
INTERVAL = 8.0


def test_while_the_listener_is_down_waiting_readers_re_read_every_fallback_interval(outage):
    slow = outage(interval=600)
    fast = outage(interval=INTERVAL)
    # The cut woke fast's reader for one re-read (finding nothing yet); the
    # next is due one INTERVAL after the cut, and no notification can come.
    slow.append(0, b"x")
    appended = time.monotonic()
    fast.append(0, b"x")
    (answer,) = fast.answers(timeout=INTERVAL + 30)
    answered = time.monotonic()
    # Found by a re-read while the listener is still down; without one the
    # long-poll would have answered 204 after 60 s.
    assert answer == (200, b"x")
    assert not listener_up(fast.server)
    # On the interval: not before one had passed since the cut, nor long after
    # the append (a generous margin: the machine may be loaded).
    assert answered - fast.cut_at >= INTERVAL, (answered - fast.cut_at, appended - fast.cut_at)
    assert answered - appended <= INTERVAL + 15, answered - appended
    # A reader whose interval is 600 s has not re-read meanwhile.
    assert not slow.readers[0].done()


def test_when_the_listener_reconnects_every_reader_re_reads(outage):
    # A fallback interval longer than the long-poll: only the reconnect can wake them.
    quiet = outage(interval=600, streams=2)
    quiet.append(0, b"x")
    quiet.append(1, b"y")
    time.sleep(2)  # a window in which nothing may answer the readers
    assert not any(reader.done() for reader in quiet.readers)
    quiet.proxy.release()  # the listener's pending connect goes through
    assert quiet.answers() == [(200, b"x"), (200, b"y")]
    assert listener_up(quiet.server)
