"""Robustness against real daphne processes: readers never see a torn append
(a), idempotent producers stay exactly-once under concurrency and retries (b),
a connection killed mid-append leaves nothing (e), and everything acknowledged
survives kill -9 of the server (f)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from durable_streams import offsets

from ..support import read_all, unique

# Only the servers and child processes write, so every read sees committed data;
# the marker sets up the test database (see tests/conftest.py). No flush needed.
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}
BINARY = {"Content-Type": "application/octet-stream"}


def off(position: int) -> str:
    return offsets.encode(position)


# --- (a) concurrent readers during a large append ---------------------------------------------


def test_readers_during_a_large_append_see_nothing_or_all_of_it(ds_server):
    url = ds_server.stream_url(unique("big"))
    head = b"head"
    payload = random.Random(42).randbytes(8 * 1024 * 1024)
    httpx.put(url, headers=BINARY, content=head)
    old_tail, new_tail = off(len(head)), off(len(head) + len(payload))

    posting = threading.Event()
    posted = threading.Event()
    observations = {"empty": 0, "whole": 0, "during": 0, "head": 0}
    lock = threading.Lock()

    def note(kind: str, started: float, finished: float) -> None:
        with lock:
            observations[kind] += 1
            if posting.is_set() and not posted.is_set() and started >= post_started[0]:
                observations["during"] += 1

    post_started = [float("inf")]

    def reader(index: int) -> None:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=60) as client:
            for _ in range(5000):
                if time.monotonic() > deadline:
                    raise AssertionError("reader ran out of time")
                started = time.monotonic()
                if index % 2:
                    tail = client.head(url).headers["Stream-Next-Offset"]
                    assert tail in (old_tail, new_tail), tail  # never in between
                    note("head", started, time.monotonic())
                else:
                    response = client.get(url, params={"offset": old_tail})
                    assert response.status_code == 200
                    if response.content == b"":
                        assert response.headers["Stream-Next-Offset"] == old_tail
                        note("empty", started, time.monotonic())
                    else:
                        # Not empty: the whole append must be there, byte for byte.
                        body, tail, _ = read_all(client, url, old_tail)
                        assert tail == new_tail
                        assert body == payload
                        note("whole", started, time.monotonic())
                        return
                if posted.is_set() and index % 2:
                    return

    with ThreadPoolExecutor(6) as pool:
        readers = [pool.submit(reader, i) for i in range(6)]
        time.sleep(0.3)  # readers are polling the old tail
        posting.set()
        post_started[0] = time.monotonic()
        response = httpx.post(url, headers=BINARY, content=payload, timeout=60)
        posted.set()
        assert response.status_code == 204
        assert response.headers["Stream-Next-Offset"] == new_tail
        for future in readers:
            future.result(timeout=90)
    assert observations["empty"] > 0 and observations["whole"] == 3
    assert observations["during"] > 0, observations  # reads really overlapped the append


# --- (b) concurrent idempotent producers ------------------------------------------------------


async def test_concurrent_producers_with_retries_and_duplicates_append_each_seq_exactly_once(
    ds_server, second_server
):
    """Six producers, each with its own Producer-Id, send 25 batches each. Every
    request goes to one of two server processes at random; some are sent twice
    at once (a retry racing the original), some retried after their ack, some
    pipelined with the next seq, and old seqs are replayed. The stream must end
    up with every (producer, seq) exactly once, in each producer's order."""
    path = unique("producers")
    servers = [ds_server, second_server]
    producers, batches = 6, 25
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.put(ds_server.stream_url(path), headers=JSON)).status_code == 201

        async def send(rng, pid: str, seq: int) -> httpx.Response:
            return await client.post(
                rng.choice(servers).stream_url(path),
                headers={
                    **JSON,
                    "Producer-Id": pid,
                    "Producer-Epoch": "0",
                    "Producer-Seq": str(seq),
                },
                content=json.dumps(
                    [{"p": pid, "s": seq, "part": 0}, {"p": pid, "s": seq, "part": 1}]
                ),
            )

        async def producer(index: int) -> None:
            rng = random.Random(index)
            pid = f"producer-{index}"
            seq = 0
            while seq < batches:
                mode = rng.random()
                if mode < 0.25:  # the same request twice at once
                    responses = await asyncio.gather(send(rng, pid, seq), send(rng, pid, seq))
                    assert sorted(r.status_code for r in responses) == [200, 204]
                    seq += 1
                elif mode < 0.45:  # the ack was lost: retry after it
                    first = await send(rng, pid, seq)
                    again = await send(rng, pid, seq)
                    assert (first.status_code, again.status_code) == (200, 204)
                    assert again.headers["Producer-Seq"] == str(seq)
                    seq += 1
                elif mode < 0.65 and seq + 1 < batches:  # pipelined: seq and seq+1 in flight
                    first, second = await asyncio.gather(
                        send(rng, pid, seq), send(rng, pid, seq + 1)
                    )
                    assert first.status_code == 200
                    if second.status_code == 409:  # arrived first: a gap, so retry it now
                        assert second.headers["Producer-Expected-Seq"] == str(seq)
                        second = await send(rng, pid, seq + 1)
                    assert second.status_code == 200
                    seq += 2
                else:
                    response = await send(rng, pid, seq)
                    assert response.status_code == 200
                    assert response.headers["Producer-Seq"] == str(seq)
                    seq += 1
                if seq > 1 and rng.random() < 0.2:  # a stale retry arriving late
                    stale = await send(rng, pid, rng.randrange(seq - 1))
                    assert stale.status_code == 204
                    assert stale.headers["Producer-Seq"] == str(seq - 1)

        await asyncio.wait_for(asyncio.gather(*(producer(i) for i in range(producers))), 120)

        messages, offset = [], "-1"
        for _ in range(1000):
            response = await client.get(ds_server.stream_url(path), params={"offset": offset})
            messages.extend(json.loads(response.content))
            offset = response.headers["Stream-Next-Offset"]
            if response.headers.get("Stream-Up-To-Date") == "true":
                break
    assert len(messages) == producers * batches * 2
    for index in range(producers):
        mine = [(m["s"], m["part"]) for m in messages if m["p"] == f"producer-{index}"]
        assert mine == [(s, part) for s in range(batches) for part in (0, 1)]


# --- (e) a connection killed mid-append -------------------------------------------------------


@pytest.fixture(params=["lean-app", "django-app"])
def any_server(request, ds_server, second_server):
    return ds_server if request.param == "lean-app" else second_server


def send_partial(port: int, head: bytes, body_part: bytes, reset: bool) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head + body_part)
    time.sleep(0.2)  # let the server take in what it got
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize(
    ("framing", "reset"),
    [("content-length", False), ("content-length", True), ("chunked", True)],
    ids=["content-length-fin", "content-length-rst", "chunked-rst"],
)
def test_a_connection_killed_mid_append_leaves_no_partial_data(any_server, framing, reset):
    path = unique("killed")
    url = any_server.stream_url(path)
    httpx.put(url, headers=TEXT, content=b"before|")
    body = b"z" * 200_000
    if framing == "content-length":
        head = f"POST /v1/stream/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        part = body[: len(body) // 2]
    else:
        head = f"POST /v1/stream/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n"
        part = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:50_000], body[50_000:90_000]))
    send_partial(any_server.port, head.encode(), part, reset)
    # Watch for a while: nothing of the broken request may ever show up.
    for _ in range(4):
        assert httpx.head(url).headers["Stream-Next-Offset"] == off(7)
        time.sleep(0.1)
    assert httpx.get(url).content == b"before|"
    # The server is fine and the stream still takes appends.
    assert httpx.post(url, headers=TEXT, content=b"after").status_code == 204
    assert httpx.get(url).content == b"before|after"
    assert any_server.alive()


# --- (f) kill -9 and restart ------------------------------------------------------------------

RECORD = re.compile(rb"<(w\d):(\d+):(\d+)>")


def test_everything_acknowledged_survives_kill_9_of_the_server(server_factory):
    server = server_factory()
    path, closed_path = unique("durable"), unique("closed")
    url = server.stream_url(path)
    assert httpx.put(url, headers=TEXT).status_code == 201
    httpx.put(server.stream_url(closed_path), headers=JSON, content=b"[1]")
    httpx.post(
        server.stream_url(closed_path), headers={**JSON, "Stream-Closed": "true"}, content=b"2"
    )
    producer = {"Producer-Id": "p", "Producer-Epoch": "3"}
    for seq in range(3):
        response = httpx.post(
            url, headers={**TEXT, **producer, "Producer-Seq": str(seq)}, content=f"<w9:{seq}:0>"
        )
        assert response.status_code == 200

    acked: dict[str, list[tuple[int, int]]] = {f"w{i}": [] for i in range(3)}
    stop = threading.Event()

    def writer(name: str) -> None:
        mine = acked[name]  # filled as acknowledgements arrive
        with httpx.Client(timeout=30) as client:
            for i in range(10_000):
                if stop.is_set():
                    break
                record = f"<{name}:{i}:{i % 10}>"
                try:
                    response = client.post(url, headers=TEXT, content=record)
                except httpx.TransportError:
                    break  # the server died under us: this one is unacknowledged
                assert response.status_code == 204
                mine.append((i, offsets.decode(response.headers["Stream-Next-Offset"])))

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    # Kill once every writer has had appends acknowledged (not after a fixed
    # sleep: under load a second may not be enough for that).
    deadline = time.monotonic() + 120
    while not all(len(mine) > 5 for mine in acked.values()):
        assert time.monotonic() < deadline, {name: len(mine) for name, mine in acked.items()}
        assert all(t.is_alive() for t in threads), "a writer stopped before the kill"
        time.sleep(0.05)
    server.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) == 3 and all(len(mine) > 5 for mine in acked.values()), acked

    server.start()  # a new process (on a new port), same database
    url = server.stream_url(path)
    with httpx.Client(timeout=30) as client:
        stored, _, _ = read_all(client, url)
        # The stream is a sequence of whole records: nothing torn, nothing foreign.
        records = RECORD.findall(stored)
        assert b"".join(b"<%s:%s:%s>" % r for r in records) == stored
        positions = {}
        end = 0
        for name, i, _pad in records:
            end += len(b"<%s:%s:%s>" % (name, i, _pad))
            positions[(name.decode(), int(i))] = end
        # Every acknowledged append is there, at the offset it was acknowledged with.
        for name, mine in acked.items():
            for i, acked_end in mine:
                assert positions[(name, i)] == acked_end, (name, i)
        # Producer state and closure survived too.
        retry = client.post(
            url, headers={**TEXT, **producer, "Producer-Seq": "2"}, content="<w9:2:0>"
        )
        assert retry.status_code == 204
        assert client.head(server.stream_url(closed_path)).headers["Stream-Closed"] == "true"
        assert client.get(server.stream_url(closed_path)).content == b"[1,2]"
        after = client.post(
            url, headers={**TEXT, **producer, "Producer-Seq": "3"}, content="<w9:3:0>"
        )
        assert after.status_code == 200
    server.stop()


def test_kill_9_under_eight_idempotent_producers_loses_and_duplicates_nothing(server_factory):
    """Eight idempotent producers append to one stream; the server is killed
    mid-flight. Each producer then retries its unacknowledged request on the
    restarted server (as the official clients do): every seq ends up in the
    stream exactly once, in each producer's order."""
    server = server_factory()
    path = unique("producers-kill")
    assert httpx.put(server.stream_url(path), headers=JSON).status_code == 201
    pending: dict[str, int] = {}  # producer -> the seq it has not had acknowledged
    acked: dict[str, int] = {}
    stop = threading.Event()

    def send(client: httpx.Client, base: str, name: str, seq: int) -> httpx.Response:
        headers = {**JSON, "Producer-Id": name, "Producer-Epoch": "0", "Producer-Seq": str(seq)}
        body = json.dumps([{"p": name, "s": seq}])
        return client.post(f"{base}/v1/stream/{path}", headers=headers, content=body)

    def producer(name: str) -> None:
        seq = 0
        with httpx.Client(timeout=5) as client:
            while not stop.is_set() and seq < 10_000:
                pending[name] = seq
                try:
                    response = send(client, server.url, name, seq)
                except httpx.TransportError:
                    return  # the server died under us: seq is unacknowledged
                assert response.status_code == 200, response.text
                acked[name] = seq
                seq += 1
            pending.pop(name, None)

    names = [f"producer-{i}" for i in range(8)]
    threads = [threading.Thread(target=producer, args=(name,)) for name in names]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # appends flowing from all eight (bounded wait)
    while time.monotonic() < deadline and not (
        len(acked) == 8 and all(seq >= 3 for seq in acked.values())
    ):
        time.sleep(0.1)
    server.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) == 8, acked

    server.start()
    with httpx.Client(timeout=30) as client:
        for name, seq in pending.items():  # each producer retries its unacknowledged append
            response = send(client, server.url, name, seq)
            assert response.status_code in (200, 204), response.text
            if response.status_code == 204:  # it had been committed: a duplicate now
                assert response.headers["Producer-Seq"] == str(seq)
        messages, offset = [], "-1"
        for _ in range(10_000):
            response = client.get(server.stream_url(path), params={"offset": offset})
            messages.extend(json.loads(response.content))
            offset = response.headers["Stream-Next-Offset"]
            if response.headers.get("Stream-Up-To-Date") == "true":
                break
    for name in names:
        mine = [m["s"] for m in messages if m["p"] == name]
        last = pending.get(name, acked[name])
        assert mine == list(range(last + 1)), (name, mine[-5:], last)
    server.stop()
