"""Client processes of the load generator.

The orchestrator (``bench.scenarios``) starts a few of these with
``multiprocessing`` (spawn) so the load is not capped by one Python process.
Each process runs one *role* on its own event loop (uvloop when installed)
and talks to the orchestrator over a pipe:

    worker -> ("ready", info)      connections are open (readers: subscribed)
    main   -> ("go", params)       roles that wait for a common start
    worker -> ("done", result)     figures and verification, all in plain data
    worker -> ("error", text)      the role raised

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process
on the machine), so start times and send stamps can cross processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import resource
import time
import traceback
from array import array
from collections import Counter
from multiprocessing.connection import Connection as Pipe
from typing import Any
from urllib.parse import quote

import orjson

from .httpclient import Connection, HTTPError, SSEProtocol
from .messages import app_msg, json_batch, parse_live_event

REQUEST_TIMEOUT = 30.0


def raise_nofile_limit() -> None:
    """Lift the soft open-files limit to the hard one (10,000 readers need the fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class Channel:
    """The worker's end of the pipe, usable from the event loop."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def send(self, kind: str, payload: Any = None) -> None:
        self.pipe.send((kind, payload))

    async def recv(self) -> tuple[str, Any]:
        return await asyncio.to_thread(self.pipe.recv)


def worker_entry(role: str, cfg: dict, pipe: Pipe) -> None:
    raise_nofile_limit()
    chan = Channel(pipe)
    try:
        result = run_loop(ROLES[role](cfg, chan))
        chan.send("done", result)
    except BaseException as e:  # reported to the orchestrator, which counts it
        with contextlib.suppress(Exception):
            chan.send("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}")
    finally:
        pipe.close()


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class ErrorLog:
    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.samples) < 5:
            self.samples.append(text)

    def data(self) -> dict:
        return {"errors": self.count, "error_samples": self.samples}


# --------------------------------------------------------------------------- 1. appends


async def role_append(cfg: dict, chan: Channel) -> dict:
    """Closed-loop writers, one keep-alive connection each, one message per POST."""
    host, port = cfg["host"], cfg["port"]
    writers: list[tuple[int, str]] = cfg["writers"]
    conns = [Connection(host, port) for _ in writers]
    await asyncio.gather(*(c.connect() for c in conns))
    chan.send("ready")
    _, go = await chan.recv()
    start_at, end_at = go["start_at"], go["end_at"]
    latencies = array("d")
    errors = ErrorLog()
    ledgers: dict[int, dict] = {}
    last_ack = [start_at]

    async def write(w: int, path: str, conn: Connection) -> None:
        head = conn.build("POST", path, {"Content-Type": "application/json"}, app_msg(w, 0))
        head = head[: -len(app_msg(w, 0))]  # every message has the same length
        seq = 0
        uncertain: list[int] = []
        await _sleep_until(start_at)
        while time.monotonic() < end_at:
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    r = await conn.send(head + app_msg(w, seq))
            except (HTTPError, TimeoutError, OSError) as e:
                errors.add(f"writer {w} seq {seq}: {e!r}")
                uncertain.append(seq)
                seq += 1
                await asyncio.sleep(0.05)
                continue
            t1 = time.perf_counter()
            if r.status in (200, 204):
                latencies.append(t1 - t0)
                last_ack[0] = max(last_ack[0], time.monotonic())
            else:
                errors.add(f"writer {w} seq {seq}: HTTP {r.status} {r.body[:100]!r}")
                uncertain.append(seq)
            seq += 1
        ledgers[w] = {"sent": seq, "uncertain": uncertain}

    cpu0 = time.process_time()
    await asyncio.gather(*(write(w, p, c) for (w, p), c in zip(writers, conns, strict=True)))
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    return {
        "cpu_s": cpu,
        "ledgers": ledgers,
        "latencies": latencies.tobytes(),
        "last_ack": last_ack[0],
        **errors.data(),
    }


# --------------------------------------------------------------------------- 2. batched producer


async def role_produce(cfg: dict, chan: Channel) -> dict:
    """Idempotent producers (Producer-Id/-Epoch/-Seq), ``batch`` messages per POST.

    A request that fails is retried with the same Producer-Seq, as a real
    producer does; the server must then deduplicate (answer 204, store once).
    """
    host, port, batch = cfg["host"], cfg["port"], cfg["batch"]
    producers: list[tuple[int, str]] = cfg["producers"]
    conns = [Connection(host, port) for _ in producers]
    await asyncio.gather(*(c.connect() for c in conns))
    chan.send("ready")
    _, go = await chan.recv()
    start_at, end_at = go["start_at"], go["end_at"]
    errors = ErrorLog()
    ledgers: dict[int, dict] = {}
    latencies = array("d")
    stats = {"acked_msgs": 0, "acked_bytes": 0, "retries": 0}
    last_ack = [start_at]

    async def produce(p: int, path: str, conn: Connection) -> None:
        seq = 0
        uncertain: list[int] = []
        await _sleep_until(start_at)
        while time.monotonic() < end_at:
            body = json_batch([app_msg(p, seq * batch + i) for i in range(batch)])
            headers = {
                "Content-Type": "application/json",
                "Producer-Id": f"bench-producer-{p}",
                "Producer-Epoch": "0",
                "Producer-Seq": str(seq),
            }
            raw = conn.build("POST", path, headers, body)
            outcome = None
            for attempt in range(3):
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        r = await conn.send(raw)
                except (HTTPError, TimeoutError, OSError) as e:
                    errors.add(f"producer {p} seq {seq}: {e!r}")
                    stats["retries"] += 1
                    await asyncio.sleep(0.05)
                    continue
                if r.status == 200 or (r.status == 204 and attempt > 0):
                    outcome = "ok"
                    latencies.append(time.perf_counter() - t0)
                elif r.status == 204:
                    errors.add(f"producer {p} seq {seq}: first attempt answered as duplicate")
                    outcome = "ok"
                else:
                    errors.add(f"producer {p} seq {seq}: HTTP {r.status} {r.body[:100]!r}")
                    outcome = "failed"
                break
            if outcome != "ok":
                uncertain.extend(range(seq * batch, (seq + 1) * batch))
                seq += 1
                break  # the producer's sequence is broken: stop this producer
            stats["acked_msgs"] += batch
            stats["acked_bytes"] += len(body)
            last_ack[0] = max(last_ack[0], time.monotonic())
            seq += 1
        ledgers[p] = {"sent": seq * batch, "uncertain": uncertain}

    cpu0 = time.process_time()
    await asyncio.gather(*(produce(p, s, c) for (p, s), c in zip(producers, conns, strict=True)))
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    return {
        "cpu_s": cpu,
        "ledgers": ledgers,
        "latencies": latencies.tobytes(),
        "last_ack": last_ack[0],
        **stats,
        **errors.data(),
    }


# --------------------------------------------------------------------------- 3. catch-up


def catchup_payload(size: int, seed: int) -> bytes:
    """The binary stream's content: ``size`` pseudo-random bytes (no compressible pattern)."""
    return random.Random(seed).randbytes(size)


async def role_catchup(cfg: dict, chan: Channel) -> dict:
    """Read the binary stream from ``-1``, following Stream-Next-Offset, comparing every byte."""
    host, port, path = cfg["host"], cfg["port"], cfg["path"]
    expected = catchup_payload(cfg["size"], cfg["seed"])
    conn = Connection(host, port)
    await conn.connect()
    chan.send("ready")
    _, go = await chan.recv()
    await _sleep_until(go["start_at"])
    errors = ErrorLog()
    total = 0
    passes = 0
    requests = 0
    t0 = time.monotonic()
    cut_by = t0 + cfg["max_time"]  # a slow server is measured on part of a pass
    cut = False
    while passes < cfg["max_passes"] and (passes == 0 or time.monotonic() - t0 < cfg["min_time"]):
        offset, pos = "-1", 0
        while True:
            if time.monotonic() > cut_by:
                cut = True
                break
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    r = await conn.request("GET", f"{path}?offset={quote(offset)}")
            except (HTTPError, TimeoutError, OSError) as e:
                errors.add(f"read at {pos}: {e!r}")
                break
            requests += 1
            if r.status != 200:
                errors.add(f"read at {pos}: HTTP {r.status}")
                break
            n = len(r.body)
            if r.body != expected[pos : pos + n]:
                errors.add(f"bytes differ in [{pos}, {pos + n})")
                break
            pos += n
            offset = r.headers.get("stream-next-offset", "")
            if r.headers.get("stream-up-to-date") == "true" or pos >= len(expected):
                break
            if n == 0:
                errors.add(f"empty chunk at {pos} without Stream-Up-To-Date")
                break
        total += pos
        if cut:
            break
        if pos != len(expected):
            errors.add(f"pass {passes}: read {pos} of {len(expected)} bytes")
        passes += 1
    elapsed = time.monotonic() - t0
    conn.close()
    return {
        "bytes": total,
        "elapsed": elapsed,
        "passes": passes,  # complete ones
        "cut": cut,
        "requests": requests,
        **errors.data(),
    }


# --------------------------------------------------------------------------- 4/5. live readers


class _Shared:
    """Per-process state of the live readers: parse caches and latency samples.

    All readers of a stream receive the same events, so each distinct event is
    parsed once per process; each reader still checks sequence numbers and
    hashes the message bytes it got.
    """

    def __init__(self) -> None:
        self.data_cache: dict[bytes, tuple[list[int], list[int], bytes]] = {}
        self.control_cache: dict[bytes, dict] = {}
        self.lat = {"sse": array("d"), "long-poll": array("d")}

    def data(self, raw: bytes) -> tuple[list[int], list[int], bytes]:
        parsed = self.data_cache.get(raw)
        if parsed is None:
            parsed = parse_live_event(raw)
            self.data_cache[raw] = parsed
        return parsed

    def control(self, raw: bytes) -> dict:
        parsed = self.control_cache.get(raw)
        if parsed is None:
            parsed = orjson.loads(raw)
            self.control_cache[raw] = parsed
        return parsed


class LiveReader:
    def __init__(self, shared: _Shared, mode: str, offset: str) -> None:
        self.shared = shared
        self.mode = mode
        self.lat = shared.lat[mode]
        self.offset = offset
        self.cursor: str | None = None
        self.expected = 0  # next sequence number
        self.hash = hashlib.sha256()
        self.gaps = 0
        self.duplicates = 0
        self.errors = 0
        self.reconnects = 0
        self.closed = False
        self.subscribed = asyncio.get_running_loop().create_future()

    def messages(self, raw: bytes) -> None:
        now_us = time.monotonic_ns() // 1000
        seqs, stamps, blob = self.shared.data(raw)
        if seqs and seqs[0] == self.expected and seqs[-1] == self.expected + len(seqs) - 1:
            self.expected += len(seqs)
        else:
            for s in seqs:
                if s == self.expected:
                    self.expected += 1
                elif s < self.expected:
                    self.duplicates += 1
                else:
                    self.gaps += s - self.expected
                    self.expected = s + 1
        self.hash.update(blob)
        lat = self.lat
        for t in stamps:
            lat.append((now_us - t) / 1e6)

    def on_sse_event(self, etype: bytes, data: bytes) -> None:
        if etype == b"data":
            self.messages(data)
        elif etype == b"control":
            c = self.shared.control(data)
            self.offset = c.get("streamNextOffset", self.offset)
            self.cursor = c.get("streamCursor", self.cursor)
            if c.get("streamClosed"):
                self.closed = True
            if not self.subscribed.done():
                self.subscribed.set_result(True)

    def target(self) -> str:
        q = f"?offset={quote(self.offset)}&live={self.mode}"
        if self.cursor:
            q += f"&cursor={quote(self.cursor)}"
        return q


async def _run_sse(
    r: LiveReader, host: str, port: int, path: str, finish_by: float, gate: asyncio.Semaphore
) -> None:
    loop = asyncio.get_running_loop()
    authority = f"{host}:{port}"
    first = True
    while not r.closed and time.monotonic() < finish_by:
        request = (
            f"GET {path}{r.target()} HTTP/1.1\r\nHost: {authority}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        proto: SSEProtocol | None = None
        try:
            if first:
                # connection set-up is what overloads a server: do it in waves
                async with gate:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        _, proto = await loop.create_connection(
                            lambda request=request: SSEProtocol(request, r.on_sse_event), host, port
                        )
                        status, _headers = await proto.headers_future
                        if status == 200:
                            await asyncio.wait(
                                [r.subscribed, proto.done], return_when=asyncio.FIRST_COMPLETED
                            )
            else:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    _, proto = await loop.create_connection(
                        lambda request=request: SSEProtocol(request, r.on_sse_event), host, port
                    )
                    status, _headers = await proto.headers_future
            if status != 200:
                r.errors += 1
                await asyncio.sleep(0.5)
                continue
            first = False
            remaining = finish_by - time.monotonic()
            if remaining > 0:
                await asyncio.wait([proto.done], timeout=remaining)
            if proto.done.done() and not r.closed:
                r.reconnects += 1  # the server ended the response (e.g. its max duration)
        except (OSError, TimeoutError, HTTPError):
            r.errors += 1
            await asyncio.sleep(0.5)
        finally:
            if proto is not None:
                proto.close()


async def _run_long_poll(
    r: LiveReader, host: str, port: int, path: str, finish_by: float, gate: asyncio.Semaphore
) -> None:
    conn = Connection(host, port)
    try:
        try:
            async with gate, asyncio.timeout(REQUEST_TIMEOUT):
                await conn.connect()
        except (OSError, TimeoutError):
            r.errors += 1
            return
        r.subscribed.set_result(True)
        while not r.closed and time.monotonic() < finish_by:
            try:
                async with asyncio.timeout(max(0.1, finish_by - time.monotonic())):
                    resp = await conn.request("GET", path + r.target())
            except (OSError, TimeoutError, HTTPError):
                if time.monotonic() < finish_by:
                    r.errors += 1
                    await asyncio.sleep(0.2)
                continue
            h = resp.headers
            if resp.status == 200:
                if resp.body:
                    r.messages(resp.body)
            elif resp.status != 204:
                r.errors += 1
                await asyncio.sleep(0.2)
                continue
            r.offset = h.get("stream-next-offset", r.offset)
            r.cursor = h.get("stream-cursor", r.cursor)
            if h.get("stream-closed") == "true":
                r.closed = True
    finally:
        conn.close()


async def role_live(cfg: dict, chan: Channel) -> dict:
    """Long-poll and SSE readers tailing one JSON stream until it is closed.

    Reports ready once every reader is subscribed (SSE: first control event
    received; long-poll: connected, the first poll goes out at once) or the
    connect deadline passed; then reads until the stream closes or ``finish_by``.
    """
    host, port, path = cfg["host"], cfg["port"], cfg["path"]
    finish_by = cfg["finish_by"]
    shared = _Shared()
    gate = asyncio.Semaphore(cfg.get("connect_concurrency", 100))
    readers: list[LiveReader] = []
    tasks = []
    for mode, n in (("long-poll", cfg["long_poll"]), ("sse", cfg["sse"])):
        for _ in range(n):
            r = LiveReader(shared, mode, cfg.get("offset", "-1"))
            readers.append(r)
            run = _run_sse if mode == "sse" else _run_long_poll
            tasks.append(asyncio.ensure_future(run(r, host, port, path, finish_by, gate)))
    cpu0 = time.process_time()
    subs = [r.subscribed for r in readers]
    if subs:
        await asyncio.wait(subs, timeout=max(0.1, cfg["connect_by"] - time.monotonic()))
    subscribed = sum(1 for s in subs if s.done())
    chan.send("ready", {"subscribed": subscribed, "readers": len(readers)})
    # The orchestrator sends ("finish_by", t) once the writer is done: readers
    # still short of the end by then have not kept up and are stopped.
    told = asyncio.ensure_future(chan.recv())
    pending = set(tasks)
    while pending and time.monotonic() < finish_by:
        done, _ = await asyncio.wait(
            pending if told.done() else pending | {told},
            timeout=finish_by - time.monotonic(),
            return_when="FIRST_COMPLETED",
        )
        pending -= done
        if told in done:
            with contextlib.suppress(Exception):
                kind, when = told.result()
                if kind == "finish_by":
                    finish_by = min(finish_by, when)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if not told.done():
        await asyncio.wait([told], timeout=30)  # its thread must end before the loop closes

    out: dict[str, Any] = {"cpu_s": time.process_time() - cpu0}
    for mode in ("long-poll", "sse"):
        rs = [r for r in readers if r.mode == mode]
        outcomes = Counter((r.expected, r.hash.hexdigest()) for r in rs)
        out[mode] = {
            "readers": len(rs),
            "subscribed": sum(1 for r in rs if r.subscribed.done()),
            "closed": sum(1 for r in rs if r.closed),
            "outcomes": [[n, d, c] for (n, d), c in outcomes.items()],
            "gaps": sum(r.gaps for r in rs),
            "duplicates": sum(r.duplicates for r in rs),
            "errors": sum(r.errors for r in rs),
            "reconnects": sum(r.reconnects for r in rs),
            "latencies": shared.lat[mode].tobytes(),
        }
    return out


async def role_ai_generate(cfg: dict, chan: Channel) -> dict:
    from .ai import role_generate

    return await role_generate(cfg, chan)


async def role_ai_read(cfg: dict, chan: Channel) -> dict:
    from .ai import role_read

    return await role_read(cfg, chan)


ROLES = {
    "ai_generate": role_ai_generate,
    "ai_read": role_ai_read,
    "append": role_append,
    "produce": role_produce,
    "catchup": role_catchup,
    "live": role_live,
}
