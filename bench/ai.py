"""Scenario 6 (issue 13): concurrent AI generations, each followed by an SSE reader.

One client process runs the generations the way a Celery task or an async
view would: ``durable_streams.ai.TokenWriter`` over the in-process API, against
the server's database, each generation a paced source of ``rate`` chunks a
second (every chunk a JSON message stamped with its ``time.monotonic()``).
Other client processes follow each generation's stream over HTTP with one SSE
reader, until the stream closes. Figures: chunk-to-reader latency (the chunk's
stamp to its arrival at the reader: the writer's linger, the append, the
NOTIFY and the SSE delivery), and append transactions per generation per
linger interval (the writer's own count over the generation's length in
linger intervals; at most 1 when coalescing works). Reported, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

from .scenarios import WorkerGroup, latencies_of, ms, per_delivery_us, percentile, rate, split
from .workers import Channel, LiveReader, _run_sse, _Shared

PATH_PREFIX = "/v1/stream/"  # the example project's mount point


async def role_generate(cfg: dict, chan: Channel) -> dict:
    """Create every generation's stream, say ready, then run them all at once."""
    os.environ.update(cfg["env"])
    import django

    django.setup()
    from durable_streams.ai import TokenWriter
    from durable_streams.conf import ds_settings

    linger = ds_settings.AI_WRITER_LINGER
    writers = [TokenWriter(path) for path in cfg["paths"]]
    for writer in writers:
        await writer.open()
    chan.send("ready", {"streams": len(writers), "linger": linger})
    kind, start = await chan.recv()
    assert kind == "go"
    chunks, interval = cfg["chunks"], 1.0 / cfg["rate"]
    pad = "x" * 24  # a token-sized payload beside the stamps

    async def tokens(offset: float):
        begin = start + offset
        for i in range(chunks):
            delay = begin + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield {"s": i, "t": time.monotonic_ns() // 1000, "p": pad}

    async def generate(k: int, writer: Any) -> dict:
        t0 = time.monotonic()
        # Generations start spread over one chunk interval, as real ones would.
        result = await writer.consume(tokens(interval * k / len(writers)))
        return {"appends": result.appends, "ok": result.ok, "seconds": time.monotonic() - t0}

    done = await asyncio.gather(
        *(generate(k, w) for k, w in enumerate(writers)), return_exceptions=True
    )
    failures = [repr(d) for d in done if isinstance(d, BaseException)]
    results = [d for d in done if not isinstance(d, BaseException)]
    return {"linger": linger, "results": results, "failures": failures[:5], "failed": len(failures)}


async def role_read(cfg: dict, chan: Channel) -> dict:
    """One SSE reader per stream, from the start, until the stream closes."""
    shared = _Shared()
    gate = asyncio.Semaphore(50)
    readers, tasks = [], []
    for path in cfg["paths"]:
        r = LiveReader(shared, "sse", "-1")
        readers.append(r)
        tasks.append(
            asyncio.ensure_future(
                _run_sse(r, cfg["host"], cfg["port"], path, cfg["finish_by"], gate)
            )
        )
    subs = [r.subscribed for r in readers]
    await asyncio.wait(subs, timeout=max(0.1, cfg["connect_by"] - time.monotonic()))
    chan.send("ready", {"subscribed": sum(1 for s in subs if s.done())})
    await asyncio.wait(tasks, timeout=max(0.1, cfg["finish_by"] - time.monotonic()))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "received": Counter(r.expected for r in readers),
        "closed": sum(1 for r in readers if r.closed),
        "gaps": sum(r.gaps for r in readers),
        "duplicates": sum(r.duplicates for r in readers),
        "errors": sum(r.errors for r in readers),
        "latencies": shared.lat["sse"].tobytes(),
    }


async def run(bench: Any) -> dict:
    """The scenario against ``bench``'s server (ours only: it needs our database)."""
    p = bench.p
    env = getattr(bench.server.spec, "env", None) or {}
    if "DATABASE_URL" not in env:
        return {"skipped": "needs our server's database"}
    n, chunks = p.ai_generations, round(p.ai_rate * p.ai_seconds)
    urls = [bench.path(f"ai-{i}") for i in range(n)]
    paths = [u.removeprefix(PATH_PREFIX) for u in urls]
    gen = WorkerGroup(
        "ai_generate", [{"env": env, "paths": paths, "chunks": chunks, "rate": p.ai_rate}]
    )
    readers: WorkerGroup | None = None
    try:
        (made,) = await gen.gather("ready", 120)
        now = time.monotonic()
        finish_by = now + 30 + p.ai_seconds + p.drain_seconds + 5
        cfgs = [
            {**bench.base_cfg(), "paths": part, "connect_by": now + 30, "finish_by": finish_by}
            for part in split(urls, p.ai_reader_procs)
        ]
        readers = WorkerGroup("ai_read", cfgs)
        ready = await readers.gather("ready", 60)
        cpu0 = bench.server.cpu_seconds()
        t0 = time.monotonic()
        gen.broadcast("go", time.monotonic() + 0.2)
        (written,) = await gen.gather("done", p.ai_seconds + 120)
        read = await readers.gather("done", finish_by - time.monotonic() + 60)
        server_cpu = bench.server.cpu_seconds() - cpu0
        elapsed = time.monotonic() - t0
    finally:
        gen.close()
        if readers is not None:
            readers.close()
    linger = made["linger"]
    lat = latencies_of([r["latencies"] for r in read])
    lat_sorted = sorted(lat)
    per_interval = [
        r["appends"] / max(1.0, r["seconds"] / linger) for r in written["results"] if linger > 0
    ]
    complete = sum(c for r in read for got, c in r["received"].items() if int(got) == chunks)
    errors = written["failed"] + sum(r["errors"] + r["gaps"] + r["duplicates"] for r in read)
    return {
        "generations": n,
        "chunks_each": chunks,
        "subscribed": sum(r["subscribed"] for r in ready),
        "p50_ms": ms(percentile(lat_sorted, 50, ordered=True)),
        "p99_ms": ms(percentile(lat_sorted, 99, ordered=True)),
        "max_ms": ms(lat_sorted[-1]) if lat_sorted else None,
        "appends_per_generation": round(
            sum(r["appends"] for r in written["results"]) / max(1, len(written["results"])), 1
        ),
        "appends_per_linger_mean": round(sum(per_interval) / len(per_interval), 3)
        if per_interval
        else None,
        "appends_per_linger_max": round(max(per_interval), 3) if per_interval else None,
        "linger_ms": round(linger * 1000, 1),
        "complete": complete,
        "server_cpu_s_per_s": rate(server_cpu, elapsed),
        # the generations write from a client process: the server CPU is serving readers
        "cpu_us_per_delivery": per_delivery_us(server_cpu, len(lat)),
        "errors": errors,
        "error_samples": written["failures"],
        "verified": complete == n and errors == 0,
    }
