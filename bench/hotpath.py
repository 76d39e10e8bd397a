"""Profile the per-request cost of the lean ASGI path, in process, no server.

    DATABASE_URL=... .venv/bin/python -m bench.hotpath [--requests 2000] [--mode append|read|both]

Drives ``example_project.asgi.application`` with ASGI messages straight from
Python (one request at a time, as one keep-alive writer would), so what is
measured is the app's own work per request: Django request/response objects,
access policy, headers, storage ops, the group committer and the database
driver. Prints microseconds per request (wall and CPU) and cProfile's top
functions by own time; ``--calls`` prints function calls per request, a
figure that does not move with machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")


def _scope(method: str, path: str, query: bytes = b"", headers=()) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _call(app, scope: dict, body: bytes = b"") -> int:
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


async def _run(app, mode: str, n: int, path: str) -> None:
    body = b'{"writer":1,"seq":0,"pad":"' + b"x" * 70 + b'"}'
    json_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if mode == "append":
        for _ in range(n):
            status = await _call(app, _scope("POST", path, headers=json_headers), body)
            assert status == 204, status
    else:
        # A live reader's read: the latest message, from its offset.
        query = f"offset={await _tail_minus_one(path)}".encode()
        for _ in range(n):
            status = await _call(app, _scope("GET", path, query))
            assert status == 200, status


async def _tail_minus_one(path: str) -> str:
    from durable_streams import offsets, storage

    meta = await storage.arequire_stream(path[len("/v1/stream/") :])
    return offsets.encode(meta.tail - 1)


async def main_async(args) -> None:
    from example_project.asgi import application as app

    path = f"/v1/stream/profile-{uuid.uuid4().hex[:8]}"
    assert (
        await _call(app, _scope("PUT", path, headers=[(b"content-type", b"application/json")]))
        == 201
    )
    # A few appends so reads return data, and warm every cache and the pool.
    await _run(app, "append", 50, path)
    await _run(app, "read", 50, path)
    for mode in args.modes:
        profiler = cProfile.Profile()
        wall, cpu = time.perf_counter(), time.process_time()
        profiler.enable()
        await _run(app, mode, args.requests, path)
        profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = pstats.Stats(profiler)
        calls = stats.total_calls  # type: ignore[attr-defined]
        print(
            f"{mode}: {args.requests} requests, {wall / args.requests * 1e6:.0f} us wall, "
            f"{cpu / args.requests * 1e6:.0f} us CPU (profiled) per request, "
            f"{calls / args.requests:.0f} function calls per request"
        )
        if args.dump:
            profiler.dump_stats(f"{args.dump}.{mode}")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
    from durable_streams.storage import close_pool

    await close_pool()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.hotpath")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--mode", default="both", choices=["append", "read", "both"])
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--dump", metavar="PREFIX", help="write each profile to PREFIX.<mode>")
    args = ap.parse_args()
    args.modes = ["append", "read"] if args.mode == "both" else [args.mode]
    import django

    django.setup()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
