"""The two rows issue 15 added to every run, for ``ours`` only:

* **ceiling**: the trivial ASGI app (``bench/trivial.py``) under the same
  server command, loaded like scenario 1 (8 writers, one POST each at a time):
  what the ASGI server alone allows here, the figure our appends compare with;
* **cache**: nginx with the shipped ``deploy/nginx-cache.conf`` in front of
  our server; long-poll readers of one stream through it while a writer
  appends to the origin directly. Reports delivery latency, whether every
  reader got every message once, and origin requests per append (from
  nginx's log: requests it passed to the origin).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .httpclient import Connection
from .nginx import NginxCache, available
from .scenarios import Bench, WorkerGroup, ms, percentile, rate
from .servers import RunningServer, ServerSpec

APP = "example_project.asgi:application"
TRIVIAL = "bench.trivial:app"


def ceiling_spec(spec: ServerSpec) -> ServerSpec | None:
    """Our server's command serving the trivial app; None if it names no app we know."""
    if not any(APP in part for part in spec.command):
        return None
    command = [part.replace(APP, TRIVIAL) for part in spec.command]
    return ServerSpec("ceiling", "trivial ASGI app", command, dict(spec.env))


async def ceiling(spec: ServerSpec, bench_params: Any, run_id: str) -> dict:
    trivial = ceiling_spec(spec)
    if trivial is None:
        return {"skipped": "--server-cmd names no example_project.asgi:application"}
    server = RunningServer(trivial, "ceiling")
    await server.start()
    try:
        bench = Bench(server, bench_params, run_id, print)
        group = WorkerGroup(
            "append",
            [
                {**bench.base_cfg(), "writers": [(w, f"/ceiling/{w}") for w in ws]}
                for ws in _deal(list(range(bench_params.append_writers)), bench_params.append_procs)
            ],
        )
        try:
            await group.gather("ready", 60)
            seconds = bench_params.append_seconds
            start_at = time.monotonic() + 0.2
            cpu0 = server.cpu_seconds()
            group.broadcast("go", {"start_at": start_at, "end_at": start_at + seconds})
            results = await group.gather("done", seconds + 90)
            server_cpu = server.cpu_seconds() - cpu0
        finally:
            group.close()
    finally:
        server.stop()
    acked = sum(
        led["sent"] - len(led["uncertain"]) for r in results for led in r["ledgers"].values()
    )
    elapsed = max(r["last_ack"] for r in results) - start_at
    errors = sum(r["errors"] for r in results)
    return {
        "msgs_per_s": round(acked / elapsed, 1) if elapsed > 0 else None,
        "server_cpu": rate(server_cpu, elapsed),
        "errors": errors,
        "verified": errors == 0,
    }


def _deal(items: list, n: int) -> list[list]:
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


async def cache(bench: Bench, readers: int) -> dict:
    """``readers`` long-poll readers through nginx; appends at the fan-out rate."""
    if not available():
        return {"skipped": "nginx is not installed (make nginx)", "errors": 0}
    p = bench.p
    proxy = NginxCache(bench.port, workers=1).start()
    conn = Connection(bench.host, bench.port)
    out: dict[str, Any] = {"readers": readers}
    try:
        path = bench.path(f"cache{readers}")
        await bench.create(conn, path, "application/json")
        now = time.monotonic()
        connect_by = now + p.fanout_connect_seconds
        finish_by = connect_by + p.fanout_seconds + p.writer_slack_seconds + p.drain_seconds + 5
        procs = max(1, min(p.fanout_procs, readers))
        cfgs = [
            {
                "host": "127.0.0.1",
                "port": proxy.port,
                "path": path,
                "long_poll": readers // procs + (i < readers % procs),
                "sse": 0,
                "connect_by": connect_by,
                "finish_by": finish_by,
                "connect_concurrency": 100,
            }
            for i in range(procs)
        ]
        group = WorkerGroup("live", cfgs)
        try:
            ready = await group.gather("ready", p.fanout_connect_seconds + 60)
            out["subscribed"] = sum(r["subscribed"] for r in ready)
            await asyncio.sleep(1.0)  # the first long-polls reach nginx and queue on its lock
            before = proxy.origin_reads()
            count = round(p.fanout_seconds * p.fanout_rate)
            planned = count
            cpu0 = bench.server.cpu_seconds()
            t_write = time.monotonic()
            digest, count, werrors, on_time = await bench._live_writer(
                conn, path, count, 1 / p.fanout_rate, slack=p.writer_slack_seconds
            )
            out["server_cpu"] = rate(bench.server.cpu_seconds() - cpu0, time.monotonic() - t_write)
            group.broadcast("finish_by", time.monotonic() + p.drain_seconds)
            results = await group.gather("done", p.drain_seconds + 60)
        finally:
            group.close()
        await asyncio.sleep(0.5)  # nginx logs a request when it ends
        origin = proxy.origin_reads() - before
    finally:
        conn.close()
        proxy.stop()
    j = bench._judge([r["long-poll"] for r in results], count, digest)
    bad = j["readers"] - j["complete"]
    errors = len(werrors) + j["reader_errors"] + j["gaps"] + j["duplicates"] + bad
    # The close is one more change the readers fetch: count it as an append.
    per_append = round(origin / (count + 1), 2) if count else None
    out.update(
        messages=count,
        planned=planned,
        writer_on_time=on_time,
        complete=j["complete"],
        all_delivered=j["all_delivered"],
        origin_reads=origin,
        origin_per_append=per_append,
        p50_ms=j["p50_ms"],
        p99_ms=j["p99_ms"],
        max_ms=j["max_ms"],
        errors=errors,
        verified=bad == 0,
        error_samples=(werrors + ([f"{bad} of {readers} readers incomplete"] if bad else []))[:5],
    )
    return out


__all__ = ["cache", "ceiling", "ms", "percentile"]
