"""Live reads over real HTTP: long-poll (5.7) and SSE (5.8), including closure,
timeouts, framing, base64, keep-alives and clients that go away."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from durable_streams import offsets

from ..support import SSE, await_waiting_readers, unique

# Only the servers and child processes write, so every read sees committed data;
# the marker sets up the test database (see tests/conftest.py). No flush needed.
pytestmark = pytest.mark.django_db

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}
BINARY = {"Content-Type": "application/octet-stream"}
LONG_POLL_TIMEOUT = 2.0  # tests/settings.py, main server
SSE_MAX_DURATION = 5.0


def off(position: int) -> str:
    return offsets.encode(position)


def long_poll(url: str, offset: str, **params) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(url, params={"offset": offset, "live": "long-poll", **params}, timeout=30)
    return response, time.monotonic() - started


class Waiting:
    """Long-polls started on threads, released once the server counts them
    all as waiting (the barrier of ``support.await_waiting_readers``)."""

    def __init__(self, server, url: str, offset: str, count: int = 1) -> None:
        await_waiting_readers(server.url, 0)
        self.pool = ThreadPoolExecutor(count)
        self.futures = [self.pool.submit(long_poll, url, offset) for _ in range(count)]
        await_waiting_readers(server.url, count)

    def results(self) -> list[httpx.Response]:
        try:
            return [future.result(timeout=60)[0] for future in self.futures]
        finally:
            self.pool.shutdown()

    def result(self) -> httpx.Response:
        (response,) = self.results()
        return response


def sse_events(url: str, offset: str, *, until=None, limit: float = 10.0):
    """Collect SSE events until the server ends the response, ``until(events)``
    is true, or ``limit`` seconds pass. Returns (events, response, raw bytes)."""
    events = []
    deadline = time.monotonic() + limit
    with httpx.stream(
        "GET", url, params={"offset": offset, "live": "sse"}, timeout=limit + 5
    ) as response:
        if response.status_code != 200:
            response.read()
            return events, response, response.content
        reader = SSE(response, deadline)
        for event in reader.events():
            events.append(event)
            if until is not None and until(events):
                break
        return events, response, reader.raw


def controls(events) -> list[dict]:
    return [json.loads(data) for kind, data in events if kind == "control"]


def data_events(events) -> list[str]:
    return [data for kind, data in events if kind == "data"]


# --- long-poll --------------------------------------------------------------------------------


@pytest.fixture
def patient_url(patient_server) -> str:
    """A fresh stream on the server whose live reads last 120 s: the client's
    30 s timeout fails any read that waits for the server's timer."""
    return patient_server.stream_url(unique())


def test_long_poll_returns_existing_data_without_waiting(http, patient_url):
    http.put(patient_url, headers=TEXT, content=b"abc")
    response, _ = long_poll(patient_url, "-1")
    assert (response.status_code, response.content) == (200, b"abc")
    assert response.headers["Stream-Cursor"]


def test_long_poll_returns_200_when_an_append_arrives(http, patient_server, patient_url):
    tail = http.put(patient_url, headers=TEXT, content=b"a").headers["Stream-Next-Offset"]
    waiting = Waiting(patient_server, patient_url, tail)
    http.post(patient_url, headers=TEXT, content=b"bc")
    response = waiting.result()
    # Woken: a reader that was not would answer 204 after 120 s.
    assert response.status_code == 200
    assert response.content == b"bc"
    assert response.headers["Stream-Next-Offset"] == off(3)
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert response.headers["Stream-Cursor"]
    assert response.headers["ETag"]
    assert response.headers["Cache-Control"].startswith("public")


def test_long_poll_times_out_with_204_and_the_tail(http, stream_url):
    tail = http.put(stream_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    response, elapsed = long_poll(stream_url, tail)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["Stream-Next-Offset"] == tail
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert response.headers["Stream-Cursor"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "Stream-Closed" not in response.headers
    assert elapsed >= LONG_POLL_TIMEOUT - 0.2  # it waited for the timeout


def test_long_poll_at_the_tail_of_a_closed_stream_returns_eof_without_waiting(http, patient_url):
    http.put(patient_url, headers={**TEXT, "Stream-Closed": "true"}, content=b"abc")
    for offset in (off(3), "now"):
        response, _ = long_poll(patient_url, offset)
        assert response.status_code == 204
        assert response.headers["Stream-Closed"] == "true"
        assert response.headers["Stream-Up-To-Date"] == "true"
        assert response.headers["Stream-Next-Offset"] == off(3)


def test_long_poll_is_released_by_a_close(http, patient_server, patient_url):
    tail = http.put(patient_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    waiting = Waiting(patient_server, patient_url, tail)
    http.post(patient_url, headers={"Stream-Closed": "true"})
    response = waiting.result()
    assert response.status_code == 204
    assert response.headers["Stream-Closed"] == "true"
    assert response.headers["Stream-Next-Offset"] == off(3)


def test_long_poll_gets_the_final_append_and_closure_together(http, patient_server, patient_url):
    tail = http.put(patient_url, headers=TEXT, content=b"abc").headers["Stream-Next-Offset"]
    waiting = Waiting(patient_server, patient_url, tail)
    http.post(patient_url, headers={**TEXT, "Stream-Closed": "true"}, content=b"end")
    response = waiting.result()
    assert (response.status_code, response.content) == (200, b"end")
    assert response.headers["Stream-Closed"] == "true"


def test_long_poll_offset_now_waits_for_new_data_only(http, patient_server, patient_url):
    http.put(patient_url, headers=TEXT, content=b"history")
    waiting = Waiting(patient_server, patient_url, "now")
    http.post(patient_url, headers=TEXT, content=b"new")
    response = waiting.result()
    assert (response.status_code, response.content) == (200, b"new")
    assert response.headers["Stream-Next-Offset"] == off(10)


def test_long_poll_offset_now_times_out_at_the_tail(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"history")
    response, _ = long_poll(stream_url, "now")
    assert response.status_code == 204
    assert response.headers["Stream-Next-Offset"] == off(7)


def test_one_append_wakes_every_waiting_long_poll(http, patient_server, patient_url):
    tail = http.put(patient_url, headers=TEXT).headers["Stream-Next-Offset"]
    waiting = Waiting(patient_server, patient_url, tail, count=12)
    http.post(patient_url, headers=TEXT, content=b"news")
    responses = waiting.results()
    assert [(r.status_code, r.content) for r in responses] == [(200, b"news")] * 12


def test_long_poll_of_a_stream_deleted_while_waiting_ends_with_404(
    http, patient_server, patient_url
):
    tail = http.put(patient_url, headers=TEXT, content=b"x").headers["Stream-Next-Offset"]
    waiting = Waiting(patient_server, patient_url, tail)
    assert http.delete(patient_url).status_code == 204
    assert waiting.result().status_code == 404


def test_long_poll_of_a_missing_stream_is_404(stream_url):
    response, _ = long_poll(stream_url, "-1")
    assert response.status_code == 404


def test_long_poll_cursor_moves_forward_when_echoed(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"abc")
    first, _ = long_poll(stream_url, "-1")
    cursor = first.headers["Stream-Cursor"]
    second, _ = long_poll(stream_url, "-1", cursor=cursor)
    assert int(second.headers["Stream-Cursor"]) > int(cursor)


def test_long_poll_of_a_json_stream_returns_an_array(http, patient_server, patient_url):
    tail = http.put(patient_url, headers=JSON, content=b"[1]").headers["Stream-Next-Offset"]
    waiting = Waiting(patient_server, patient_url, tail)
    http.post(patient_url, headers=JSON, content=b'[{"a":2},3]')
    response = waiting.result()
    assert response.status_code == 200
    assert json.loads(response.content) == [{"a": 2}, 3]
    assert response.headers["Stream-Next-Offset"] == off(3)


# --- SSE --------------------------------------------------------------------------------------


def test_sse_sends_data_then_control_and_follows_new_appends(http, stream_url):
    http.put(stream_url, headers=JSON, content=b'[{"k":"v"},{"k":"w"}]')

    done = set()

    def append_then_close(events):
        step = len(controls(events))
        if step == 1 and step not in done:
            http.post(stream_url, headers=JSON, content=b'{"k":"x"}')
        elif step == 2 and step not in done:
            http.post(stream_url, headers={"Stream-Closed": "true"})
        done.add(step)
        return False

    events, response, raw = sse_events(stream_url, "-1", until=append_then_close)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert "Stream-SSE-Data-Encoding" not in response.headers
    kinds = [kind for kind, _ in events if kind != ":"]
    assert kinds == ["data", "control", "data", "control", "control"]
    assert [json.loads(d) for d in data_events(events)] == [[{"k": "v"}, {"k": "w"}], [{"k": "x"}]]
    first, second, last = controls(events)
    assert first["streamNextOffset"] == off(2) and first["upToDate"] is True
    assert first["streamCursor"]
    assert second["streamNextOffset"] == off(3)
    # Closure ends the response: the final control event, then EOF.
    assert last == {"streamNextOffset": off(3), "streamClosed": True, "upToDate": True}
    assert raw.endswith(b"\n\n")


def test_sse_frames_every_line_of_text_as_its_own_data_line(http, stream_url):
    text = "line1\nline2\r\n line3 with a leading space\n\nafter a blank line"
    http.put(stream_url, headers={**TEXT, "Stream-Closed": "true"}, content=text.encode())
    events, _, raw = sse_events(stream_url, "-1")
    assert data_events(events) == [text.replace("\r\n", "\n")]
    assert b"event: data\ndata:line1\ndata:line2\ndata:  line3" in raw
    assert b"\ndata:\ndata:after a blank line\n\n" in raw


def test_sse_of_a_binary_stream_is_base64_encoded(http, stream_url):
    data = bytes(range(256))
    http.put(stream_url, headers={**BINARY, "Stream-Closed": "true"}, content=data)
    events, response, _ = sse_events(stream_url, "-1")
    assert response.headers["Stream-SSE-Data-Encoding"] == "base64"
    payloads = data_events(events)
    assert len(payloads) == 1
    text = payloads[0].replace("\n", "").replace("\r", "")
    assert len(text) % 4 == 0
    assert base64.b64decode(text, validate=True) == data
    assert controls(events)[-1]["streamClosed"] is True  # control events stay JSON


def test_sse_of_a_closed_stream_at_its_tail_ends_without_waiting(http, patient_url):
    # The server would keep the response open 120 s; sse_events gives up after 10.
    http.put(patient_url, headers={**TEXT, "Stream-Closed": "true"}, content=b"abc")
    events, response, _ = sse_events(patient_url, off(3))
    assert response.status_code == 200
    assert events == [
        (
            "control",
            json.dumps(
                {"streamNextOffset": off(3), "streamClosed": True, "upToDate": True},
                separators=(",", ":"),
            ),
        )
    ]


def test_sse_offset_now_skips_history(http, stream_url):
    http.put(stream_url, headers=TEXT, content=b"history")

    done = []

    def append_once(events):
        if not done:
            http.post(stream_url, headers=TEXT, content=b"new")
            done.append(True)
        return len(controls(events)) == 2

    events, _, _ = sse_events(stream_url, "now", until=append_once)
    first = controls(events)[0]
    assert first["streamNextOffset"] == off(7) and first["upToDate"] is True
    assert data_events(events) == ["new"]


def test_sse_sends_keep_alives_and_ends_after_the_max_duration(http, stream_url):
    http.put(stream_url, headers=TEXT)
    started = time.monotonic()
    events, _, _ = sse_events(stream_url, "-1", limit=SSE_MAX_DURATION + 30)
    assert time.monotonic() - started >= SSE_MAX_DURATION - 0.5  # ended by its timer
    assert [e for e in events if e[0] == ":"].count((":", "keep-alive")) >= 3
    assert len(controls(events)) == 1


def sse_resuming(url: str, offset: str = "-1", *, responses: int = 10) -> tuple[list, int]:
    """Follow SSE as a client does: when the server ends a response (its byte
    cap), reconnect from the last control's offset, until a control says the
    stream is closed. Returns (every event, number of responses)."""
    events: list = []
    for count in range(1, responses + 1):
        got, response, _ = sse_events(url, offset, limit=30)
        assert response.status_code == 200
        events += got
        last = controls(got)[-1]
        if last.get("streamClosed"):
            return events, count
        offset = last["streamNextOffset"]
    raise AssertionError(f"stream not read to its end in {responses} responses")


def test_sse_catch_up_larger_than_a_chunk_spans_several_events(http, stream_url):
    data = ("0123456789abcdef" * 65536 * 3).encode()  # 3 MB, 1 MB chunks
    http.put(stream_url, headers={**TEXT, "Stream-Closed": "true"}, content=data)
    events, responses = sse_resuming(stream_url)
    payloads = data_events(events)
    assert len(payloads) >= 3
    assert "".join(payloads).encode() == data
    # A response ends after about MAX_CHUNK_SIZE bytes (what a slow reader may
    # cost): the client resumes where the last control event said.
    assert responses >= 2
    flags = [c.get("upToDate", False) for c in controls(events)]
    assert flags[-1] is True and not any(flags[:-1])


def test_sse_keeps_utf8_characters_split_by_a_chunk_boundary_intact(http, stream_url):
    text = "a" * (1024 * 1024 - 1) + "é☃" + "b" * 10  # é straddles the 1 MB chunk
    http.put(stream_url, headers={**TEXT, "Stream-Closed": "true"}, content=text.encode())
    events, _ = sse_resuming(stream_url)
    assert "".join(data_events(events)) == text


def test_sse_of_a_stream_deleted_while_streaming_ends(http, patient_url):
    http.put(patient_url, headers=TEXT, content=b"abc")

    deleted = []

    def delete_after_the_first_control(events):
        if controls(events) and not deleted:
            deleted.append(http.delete(patient_url).status_code)
        return False  # read on until the server ends the response

    # The server's timer is 120 s: only the deletion can end the response
    # before sse_events gives up (10 s) and fails the test.
    events, response, raw = sse_events(patient_url, "-1", until=delete_after_the_first_control)
    assert response.status_code == 200
    assert deleted == [204]
    kinds = [kind for kind, _ in events if kind != ":"]
    assert kinds == ["data", "control"]  # no closure: the stream is gone, not closed
    assert data_events(events) == ["abc"]
    assert controls(events)[0]["streamNextOffset"] == off(3)
    assert raw.endswith(b"\n\n")  # ended between events, not mid-event


def test_sse_of_a_missing_stream_is_404(stream_url):
    _, response, _ = sse_events(stream_url, "-1")
    assert response.status_code == 404


# --- clients that go away ---------------------------------------------------------------------


@pytest.fixture(params=["lean-app", "django-app"])
def any_server(request, ds_server, second_server):
    return ds_server if request.param == "lean-app" else second_server


def abort(sock: socket.socket) -> None:
    """Close with a TCP reset, like a crashed client."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_dropping_sse_and_long_poll_connections_do_not_break_the_server(http, any_server):
    path = unique()
    url = any_server.stream_url(path)
    tail = http.put(url, headers=TEXT, content=b"x").headers["Stream-Next-Offset"]
    log_start = len(any_server.log_tail(chars=10**9))
    await_waiting_readers(any_server.url, 0)
    sockets = []
    for i in range(30):
        query = f"offset={tail}&live={'sse' if i % 2 else 'long-poll'}"
        sock = socket.create_connection(("127.0.0.1", any_server.port), timeout=5)
        sock.sendall(f"GET /v1/stream/{path}?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sockets.append(sock)
    await_waiting_readers(any_server.url, 30)
    for i, sock in enumerate(sockets):
        abort(sock) if i % 3 else sock.close()
    # Appends fan out to (now dead) waiters; the server must shrug that off.
    assert http.post(url, headers=TEXT, content=b"y").status_code == 204
    # The dead readers are let go (by their disconnect, or at the latest their timers).
    await_waiting_readers(any_server.url, 0)
    # A fresh reader is still woken, and reads still work.
    tail = http.head(url).headers["Stream-Next-Offset"]
    waiting = Waiting(any_server, url, tail)
    assert http.post(url, headers=TEXT, content=b"z").status_code == 204
    response = waiting.result()
    assert (response.status_code, response.content) == (200, b"z")
    assert http.get(url).content == b"xyz"
    assert any_server.alive()
    new_log = any_server.log_tail(chars=10**9)[log_start:]
    assert "Traceback" not in new_log, new_log[-3000:]


# --- live reads and the TTL; many readers of one stream ---------------------------------------


def last_access_age(database_url: str, path: str, backdate: float | None = None) -> float:
    """Seconds since the stream was last accessed; first backdates that by
    ``backdate`` seconds if given (committed, so the server sees it)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        if backdate is not None:
            conn.execute(
                "UPDATE durable_streams_stream"
                " SET last_access_at = now() - make_interval(secs => %s)"
                " WHERE path = %s AND deleted_at IS NULL",
                [backdate, path],
            )
        row = conn.execute(
            "SELECT extract(epoch FROM now() - last_access_at) FROM durable_streams_stream"
            " WHERE path = %s AND deleted_at IS NULL",
            [path],
        ).fetchone()
    return float(row[0])


def test_live_reads_slide_the_ttl(http, server, test_database_url):
    path = unique()
    url = f"{server}/v1/stream/{path}"
    tail = http.put(url, headers={**TEXT, "Stream-TTL": "60"}, content=b"abc").headers[
        "Stream-Next-Offset"
    ]
    assert last_access_age(test_database_url, path, backdate=50) >= 50
    assert http.head(url).status_code == 200  # HEAD does not slide it
    assert last_access_age(test_database_url, path) >= 50
    # A long-poll that finds nothing and times out still counts as a read.
    response, _ = long_poll(url, tail)
    assert response.status_code == 204
    assert last_access_age(test_database_url, path) < 40
    assert last_access_age(test_database_url, path, backdate=50) >= 50
    events, _, _ = sse_events(url, tail, until=lambda events: bool(controls(events)))
    assert controls(events)[0]["streamNextOffset"] == tail
    assert last_access_age(test_database_url, path) < 40


class Follower:
    """An SSE reader on a thread of its own, from ``offset`` (``before``
    characters into the stream) until it holds the rest of the stream's
    ``total`` characters (or the server ends the response)."""

    def __init__(self, url: str, offset: str, before: int, total: int) -> None:
        self.url, self.offset, self.before = url, offset, before
        self.length = total - before
        self.status: int | None = None
        self.data: list[str] = []
        self.offsets: list[str] = []
        self.received = 0
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        params = {"offset": self.offset, "live": "sse"}
        with (
            contextlib.suppress(httpx.HTTPError, AssertionError),
            httpx.stream("GET", self.url, params=params, timeout=60) as response,
        ):
            self._response, self.status = response, response.status_code
            for kind, data in SSE(response, time.monotonic() + 150).events():
                if kind == "data":
                    self.data.append(data)
                    self.received += len(data)
                elif kind == "control":
                    self.offsets.append(json.loads(data)["streamNextOffset"])
                if self.received >= self.length:
                    return

    def behind(self, written: int) -> int:
        """How many of the first ``written`` characters it has yet to receive."""
        return written - self.before - self.received

    def text(self) -> str:
        return "".join(self.data)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        self._thread.join(timeout=10)


def test_many_sse_readers_of_one_stream_receive_every_rapid_append_in_order(http, server_factory):
    """Readers woken together share one read: none may miss a commit that
    lands while that read is in flight, nor be given a read made for another
    offset. The readers start at different offsets; the appends come in
    rounds from concurrent writers, and every reader must hold all of a round
    before the next begins, so one that missed a round's last commit (and
    would wait for the server's 120 s timer) fails at that round."""
    server = server_factory(DS_TEST_LONG_POLL_TIMEOUT="120", DS_TEST_SSE_MAX_DURATION="120")
    url = server.stream_url(unique())
    readers, rounds, writers, per_writer = 12, 40, 3, 2
    backlog = [f"<b{i}>" for i in range(40)]
    batches = [
        [[f"<{r}.{w}.{i}>" for i in range(per_writer)] for w in range(writers)]
        for r in range(rounds)
    ]
    total = len("".join(backlog)) + sum(len(b) for rnd in batches for ws in rnd for b in ws)
    starts = [("-1", 0)]  # reader offsets, and how much of the data lies before them
    http.put(url, headers=TEXT)
    for body in backlog:
        response = http.post(url, headers=TEXT, content=body.encode())
        starts.append((response.headers["Stream-Next-Offset"], starts[-1][1] + len(body)))
    await_waiting_readers(server.url, 0)

    def post_all(bodies: list[str]) -> None:
        with httpx.Client(timeout=30) as writer:
            for body in bodies:
                response = writer.post(url, headers=TEXT, content=body.encode())
                assert response.status_code == 204

    # Two readers at each of six offsets across the backlog.
    followers = [Follower(url, *starts[(i % 6) * 8], total) for i in range(readers)]
    try:
        await_waiting_readers(server.url, readers)
        written = len("".join(backlog))
        with ThreadPoolExecutor(writers) as pool:
            for number, batch in enumerate(batches):
                list(pool.map(post_all, batch))
                written += sum(len(b) for ws in batch for b in ws)
                deadline = time.monotonic() + 20
                while any(f.behind(written) for f in followers):
                    behind = [f.behind(written) for f in followers]
                    assert time.monotonic() < deadline, (
                        f"round {number}: missing (<0: extra) {behind}"
                    )
                    time.sleep(0.02)
        stream = http.get(url, params={"offset": "-1"}).text
    finally:
        for follower in followers:
            follower.close()
        server.stop()
    assert len(stream) == total
    for follower in followers:
        assert follower.status == 200
        assert follower.text() == stream[follower.before :]
        assert follower.offsets == sorted(follower.offsets)
