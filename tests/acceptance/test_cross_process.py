"""Several OS processes on one database: offsets stay gap-free and strictly
increasing whoever writes, and a reader in one process is woken promptly by an
append committed in another (robustness requirements c and d): a reader that
was waiting (the server counts it) answers with the data, not with the 204 of
its timeout."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ..support import SSE, Worker, await_waiting_readers, read_all, unique

# Only the servers and child processes write, so every read sees committed data;
# the marker sets up the test database (see tests/conftest.py). No flush needed.
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def workers(child_env):
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        worker = Worker(child_env, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def test_offsets_are_gap_free_and_increasing_across_processes_and_servers(
    ds_server, second_server, workers
):
    path = unique()
    url = ds_server.stream_url(path)
    assert httpx.put(url, headers=TEXT).status_code == 201
    procs = [workers("append-many", path, f"w{i}", "40") for i in range(3)]
    for worker in procs:
        worker.wait_ready()

    acks: dict[str, list[tuple[int, str]]] = {}
    lock = threading.Lock()

    def http_writer(name: str, server) -> None:
        mine = []
        with httpx.Client(timeout=30) as client:
            for i in range(40):
                record = f"<{name}:{i}:{'y' * (i % 5)}>"
                response = client.post(server.stream_url(path), headers=TEXT, content=record)
                assert response.status_code == 204, response.text
                mine.append((decode(response.headers["Stream-Next-Offset"]), record))
        with lock:
            acks[name] = mine

    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(http_writer, f"h{i}", server)
            for i, server in enumerate([ds_server, ds_server, second_server, second_server])
        ]
        for worker in procs:
            worker.go()
        for i, worker in enumerate(procs):
            acks[f"w{i}"] = [(r["end"], r["data"]) for r in worker.results(40)]
        for future in futures:
            future.result(timeout=60)

    with httpx.Client(timeout=30) as client:
        stored, tail, _ = read_all(client, url)
    assert len(acks) == 7
    # Per writer: acknowledged offsets strictly increase in the order written.
    for name, mine in acks.items():
        ends = [end for end, _ in mine]
        assert ends == sorted(ends) and len(set(ends)) == len(ends), name
    # Together: the appends tile the stream exactly, each at its own offset.
    position = 0
    for end, record in sorted(ack for mine in acks.values() for ack in mine):
        assert end - len(record) == position, (position, end, record)
        assert stored[position:end] == record.encode()
        position = end
    assert position == len(stored) == decode(tail)


def decode(token: str) -> int:
    from durable_streams import offsets

    return offsets.decode(token)


def poll_in_background(server, url: str, offset: str, timeout: float = 60):
    """Start a long-poll on a thread and return (future, pool) once the server
    counts it as waiting: an append made after this wakes it, never finds it late."""
    await_waiting_readers(server.url, 0)
    pool = ThreadPoolExecutor(1)
    future = pool.submit(
        httpx.get, url, params={"offset": offset, "live": "long-poll"}, timeout=timeout
    )
    await_waiting_readers(server.url, 1)
    return future, pool


# The reader's server has a 15 s long-poll timeout and answers 204 when it
# expires: a 200 with the data proves the notification woke the reader.


def test_long_poll_in_one_server_is_woken_by_an_api_append_in_another_process(
    second_server, workers
):
    path = unique()
    url = second_server.stream_url(path)
    tail = httpx.put(url, headers=TEXT, content=b"a").headers["Stream-Next-Offset"]
    worker = workers("append-line", path)
    worker.wait_ready()
    future, pool = poll_in_background(second_server, url, tail)
    try:
        worker.go("from-a-worker")
        response = future.result(timeout=60)
    finally:
        pool.shutdown()
    assert (response.status_code, response.content) == (200, b"from-a-worker")
    assert worker.results(1)[0]["end"] == 1 + len("from-a-worker")


def test_long_poll_in_one_server_is_woken_by_an_append_through_another_server(
    ds_server, second_server
):
    path = unique()
    reader_url, writer_url = second_server.stream_url(path), ds_server.stream_url(path)
    tail = httpx.put(writer_url, headers=TEXT, content=b"a").headers["Stream-Next-Offset"]
    future, pool = poll_in_background(second_server, reader_url, tail)
    try:
        assert httpx.post(writer_url, headers=TEXT, content=b"via-A").status_code == 204
        response = future.result(timeout=60)
    finally:
        pool.shutdown()
    assert (response.status_code, response.content) == (200, b"via-A")


def test_sse_in_one_server_receives_appends_made_through_another_server(ds_server, patient_server):
    # The reader's server keeps SSE responses open 120 s: the response ends
    # early only by the closure, and the client gives up after 20 s.
    path = unique()
    reader_url, writer_url = patient_server.stream_url(path), ds_server.stream_url(path)
    httpx.put(writer_url, headers=TEXT)
    received: list[str] = []
    with httpx.stream(
        "GET", reader_url, params={"offset": "-1", "live": "sse"}, timeout=30
    ) as response:
        for kind, data in SSE(response, time.monotonic() + 20).events():
            if kind == "data":
                received.append(data)
            if kind == "control":
                if json.loads(data).get("streamClosed"):
                    break
                count = len(received)
                if count < 3:
                    httpx.post(writer_url, headers=TEXT, content=f"m{count}")
                elif count == 3:
                    httpx.post(writer_url, headers={"Stream-Closed": "true"})
    # With its listener up, the reader re-reads only when notified: each append
    # reached it through the other server's notification, and the closure ended it.
    assert received == ["m0", "m1", "m2"]
