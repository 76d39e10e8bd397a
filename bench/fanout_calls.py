"""Count the Python work per live delivery, in process, no server.

    DATABASE_URL=... .venv/bin/python -m bench.fanout_calls [--readers 200] [--appends 20]
        [--mode sse|long-poll|both] [--top 25]

Drives ``example_project.asgi.application`` (the lean ASGI app) in one event
loop: N readers of one stream, each a request through the app with a fake
``send`` that only counts, all caught up and waiting; then M appends, one at a
time, each awaited until every reader has it. cProfile counts the function
calls of the event loop's thread from the first append to the last delivery
(the appends themselves run on another thread, so only their NOTIFY's receipt
is counted), and the script prints them per delivery (N x M deliveries), by
area. A long-poll delivery is the 200 response and the reader's next request,
up to where it waits again. Function calls, unlike microseconds, do not move
with the machine's load.

Counted per delivery: the listener's receipt of the NOTIFY and the feed's one
shared read (both divided by N), then each reader's own work: its future, the
follow, the SSE rendering (cached per read) or the long-poll response, and the
app's send loop. The bench's own driver (its fake client) is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import uuid
from collections import Counter

from .hotpath import _call, _scope

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")

AREAS = ("C builtins", "asyncio", "Django", "durable_streams", "psycopg", "other")


def _area(filename: str) -> str:
    if filename == "~":
        return "C builtins"
    if "/bench/" in filename:
        return "bench driver"
    if "/asyncio/" in filename or filename.endswith("selectors.py"):
        return "asyncio"
    if "/django/" in filename:
        return "Django"
    if "/durable_streams/" in filename:
        return "durable_streams"
    if "/psycopg" in filename:
        return "psycopg"
    return "other"


def by_area(stats: pstats.Stats) -> Counter:
    """Calls per area; a C builtin called from the bench's driver is the driver's."""
    areas: Counter = Counter()
    for (filename, _, _), (_, calls, _, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        area = _area(filename)
        if area == "C builtins":
            from_bench = sum(c[1] for (f, _, _), c in callers.items() if "/bench/" in f)
            areas["bench driver"] += from_bench
            calls -= from_bench
        areas[area] += calls
    return areas


class Readers:
    """N readers of one stream and what they have been sent."""

    def __init__(self, app, path: str, mode: str, n: int) -> None:
        self.app, self.path, self.mode, self.n = app, path, mode, n
        self.delivered = 0
        self.target = 0
        self.done = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def _count(self) -> None:
        self.delivered += 1
        if self.delivered == self.target:
            self.done.set()

    @staticmethod
    def _receiver():
        """An ASGI receive: the empty request body, then nothing (no disconnect)."""
        body = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict:
            if body:
                return body.pop()
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        return receive

    async def _sse(self, offset: str) -> None:
        query = f"offset={offset}&live=sse".encode()
        count = self._count

        async def send(message: dict) -> None:
            # Control-only events (the first read) carry no "data:" line.
            if message.get("body", b"").startswith(b"event: data"):
                count()

        await self.app(_scope("GET", self.path, query), self._receiver(), send)

    async def _long_poll(self, offset: str) -> None:
        cursor = ""
        while True:
            query = f"offset={offset}&live=long-poll&cursor={cursor}".encode()
            sent: list[dict] = []

            async def send(message: dict, sent=sent) -> None:
                sent.append(message)

            await self.app(_scope("GET", self.path, query), self._receiver(), send)
            start = sent[0]
            for name, value in start["headers"]:
                if name == b"Stream-Next-Offset":
                    offset = value.decode()
                elif name == b"Stream-Cursor":
                    cursor = value.decode()
            if start["status"] == 200:
                self._count()

    def start(self, offset: str) -> None:
        run = self._sse if self.mode == "sse" else self._long_poll
        self.tasks = [asyncio.create_task(run(offset)) for _ in range(self.n)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _all_waiting(name: str, n: int) -> None:
    from durable_streams import live

    listener = live.get_listener()
    while True:
        feed = listener.feed_at(name)
        if feed is not None and feed.waiting >= n:
            return
        await asyncio.sleep(0.002)


def _append(path: str, i: int) -> None:
    from durable_streams import content, storage

    body = b'{"seq":%d,"pad":"%s"}' % (i, b"x" * 80)
    payload = content.parse_body("application/json", body, allow_empty_json=False)
    storage.append(path, content_type="application/json", payload=payload)


async def measure(app, mode: str, n: int, m: int) -> pstats.Stats:
    from durable_streams import offsets, storage

    loop = asyncio.get_running_loop()
    path = f"/v1/stream/fanout-calls-{uuid.uuid4().hex[:8]}"
    status = await _call(app, _scope("PUT", path, headers=[(b"content-type", b"application/json")]))
    assert status == 201, status
    name = path[len("/v1/stream/") :]
    await loop.run_in_executor(None, _append, name, -1)
    readers = Readers(app, path, mode, n)
    readers.start(offsets.encode((await storage.arequire_stream(name)).tail))
    await _all_waiting(name, n)
    # Warm-up appends (caches, the pool, the readers' timers), not counted.
    for i in range(2):
        readers.target += n
        await loop.run_in_executor(None, _append, name, i)
        await readers.done.wait()
        readers.done.clear()
        await _all_waiting(name, n)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(m):
        readers.target += n
        await loop.run_in_executor(None, _append, name, i)
        await readers.done.wait()
        readers.done.clear()
        await _all_waiting(name, n)
    profiler.disable()
    assert readers.delivered == n * (m + 2), readers.delivered
    await readers.stop()
    return pstats.Stats(profiler)


def report(mode: str, stats: pstats.Stats, deliveries: int, top: int, sort: str) -> None:
    areas = by_area(stats)
    total = sum(v for k, v in areas.items() if k != "bench driver")
    print(f"{mode}: {deliveries} deliveries, function calls per delivery (bench driver apart):")
    for area in AREAS:
        print(f"  {area:<16} {areas[area] / deliveries:8.1f}")
    print(f"  {'total':<16} {total / deliveries:8.1f}")
    print(f"  {'bench driver':<16} {areas['bench driver'] / deliveries:8.1f}")
    if top:
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(sort).print_stats(top)
        print(out.getvalue())


async def main_async(args) -> None:
    from example_project.asgi import application as app

    for mode in args.modes:
        stats = await measure(app, mode, args.readers, args.appends)
        report(mode, stats, args.readers * args.appends, args.top, args.sort)
        if args.dump:
            stats.dump_stats(f"{args.dump}.{mode}")
    from durable_streams.storage import close_pool

    await close_pool()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout_calls")
    ap.add_argument("--readers", type=int, default=200)
    ap.add_argument("--appends", type=int, default=20)
    ap.add_argument("--mode", default="both", choices=["sse", "long-poll", "both"])
    ap.add_argument("--sort", default="calls")
    ap.add_argument("--top", type=int, default=0, help="also print the top functions")
    ap.add_argument("--dump", metavar="PREFIX", help="write each profile to PREFIX.<mode>")
    args = ap.parse_args()
    args.modes = ["sse", "long-poll"] if args.mode == "both" else [args.mode]
    import django

    django.setup()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
