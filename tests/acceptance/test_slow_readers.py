"""What a client that never reads its SSE response costs the server (issue 10,
finding 6): the server's memory grows by about one MAX_CHUNK_SIZE per such
reader, not by the size of the stream, under daphne and under uvicorn. An SSE
response ends once it has carried MAX_CHUNK_SIZE bytes (docs/operations.md).
"""

from __future__ import annotations

import socket
import time

import httpx
import psutil
import pytest

from ..support import unique

pytestmark = pytest.mark.django_db

CHUNK = 1024 * 1024  # the test settings' MAX_CHUNK_SIZE
STREAM_SIZE = 16 * CHUNK
READERS = 8


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def settled_rss(pid: int, seconds: float = 45.0) -> int:
    """The server's RSS once it stops changing (bounded wait)."""
    deadline = time.monotonic() + seconds
    samples = [rss(pid)]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(rss(pid))
        if len(samples) >= 4 and max(samples[-4:]) - min(samples[-4:]) < CHUNK // 4:
            break
    return samples[-1]


def stalled_reader(port: int, path: str) -> socket.socket:
    """An SSE request whose client never reads the response."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /v1/stream/{path}?offset=-1&live=sse HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
def test_a_reader_that_never_reads_costs_about_one_chunk_of_server_memory(
    server_factory, server_name
):
    server = server_factory(server=server_name, DS_TEST_SSE_MAX_DURATION="120")
    assert server.proc is not None
    path = unique("slow")
    url = server.stream_url(path)
    text = {"Content-Type": "text/plain"}
    assert httpx.put(url, headers=text).status_code == 201
    for i in range(STREAM_SIZE // (4 * CHUNK)):
        body = bytes([97 + i]) * (4 * CHUNK)
        assert httpx.post(url, headers=text, content=body, timeout=60).status_code == 204
    # Warm up: read the whole stream once, over catch-up and SSE.
    with httpx.Client(timeout=60) as client:
        offset = "-1"
        while True:
            response = client.get(url, params={"offset": offset})
            offset = response.headers["Stream-Next-Offset"]
            if response.headers.get("Stream-Up-To-Date"):
                break
        with client.stream("GET", url, params={"offset": "-1", "live": "sse"}) as response:
            for _ in response.iter_bytes():
                pass
    before = settled_rss(server.proc.pid)
    sockets = [stalled_reader(server.port, path) for _ in range(READERS)]
    try:
        after = settled_rss(server.proc.pid)
    finally:
        for sock in sockets:
            sock.close()
    per_reader = (after - before) / READERS
    print(
        f"\n{server_name}: {READERS} non-reading SSE readers of a {STREAM_SIZE >> 20} MiB stream"
        f" (MAX_CHUNK_SIZE {CHUNK >> 20} MiB): server RSS {before >> 20} -> {after >> 20} MiB,"
        f" {per_reader / CHUNK:.2f} MiB per reader"
    )
    # Without the cap each reader held the whole stream (16 MiB and more).
    assert per_reader < 4 * CHUNK
    assert server.alive()
