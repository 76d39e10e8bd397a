"""The two rows issue 15 added to every run, for ``ours`` only:

* **ceiling**: the trivial ASGI app (``bench/trivial.py``) under the same
  server command, loaded like scenario 1 (8 writers, one POST each at a time):
  what the ASGI server alone allows here, the figure our appends compare with;
* **cache**: a shared cache in front of our server, nginx with the shipped
  ``deploy/nginx-cache.conf`` or Varnish with ``deploy/varnish-cache.vcl``;
  long-poll readers of one stream through it while a writer appends to the
  origin directly. Reports delivery latency, whether every reader got every
  message once, and origin requests per append (requests the cache passed to
  the origin: nginx's log, Varnish's ``MAIN.backend_req`` counter).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import nginx, varnish
from .httpclient import Connection
from .scenarios import Bench, WorkerGroup, delivery_figures, ms, percentile, rate, split
from .servers import RunningServer, ServerSpec, tree_cpu_seconds

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
    p = bench_params
    server = RunningServer(trivial, "ceiling")
    await server.start()
    try:
        bench = Bench(server, p, run_id, print)
        writers = [(w, f"/ceiling/{w}") for w in range(p.append_writers)]
        cfgs = [{**bench.base_cfg(), "writers": ws} for ws in split(writers, p.append_procs)]
        results, start_at, server_cpu = await bench.closed_loop("append", cfgs, p.append_seconds)
    finally:
        server.stop()
    acked = sum(
        led["sent"] - len(led["uncertain"]) for r in results for led in r["ledgers"].values()
    )
    elapsed = max(r["last_ack"] for r in results) - start_at
    errors = sum(r["errors"] for r in results)
    return {
        "msgs_per_s": round(acked / elapsed, 1) if elapsed > 0 else None,
        "server_cpu_s_per_s": rate(server_cpu, elapsed),
        "errors": errors,
        "verified": errors == 0,
    }


# The caches scenario 7 can put in front, and the result key of each.
CACHES = {"nginx": "cache", "varnish": "cache_varnish"}


async def cache(bench: Bench, readers: int, kind: str = "nginx") -> dict:
    """``readers`` long-poll readers through the ``kind`` cache; appends at the fan-out rate."""
    module = {"nginx": nginx, "varnish": varnish}[kind]
    if not module.available():
        return {"skipped": f"{kind} is not installed (make {kind})", "errors": 0}
    p = bench.p
    if kind == "nginx":
        proxy = nginx.NginxCache(bench.port, workers=1).start()
    else:
        proxy = varnish.VarnishCache(bench.port).start()
    conn = Connection(bench.host, bench.port)
    out: dict[str, Any] = {"readers": readers}
    try:
        path = bench.path(f"{CACHES[kind]}{readers}")
        await bench.create(conn, path, "application/json")
        cfgs = bench.reader_cfgs(path, readers, "long_poll", "127.0.0.1", proxy.port)
        group = WorkerGroup("live", cfgs)
        try:
            ready = await group.gather("ready", p.fanout_connect_seconds + 60)
            out["subscribed"] = sum(r["subscribed"] for r in ready)
            await asyncio.sleep(1.0)  # the first long-polls reach the cache and queue there
            before = proxy.origin_reads()
            count = round(p.fanout_seconds * p.fanout_rate)
            planned = count
            cpu0 = bench.server.cpu_seconds()
            proxy_cpu0 = tree_cpu_seconds(proxy.proc.pid)
            t_write = time.monotonic()
            digest, count, werrors, on_time = await bench._live_writer(
                conn, path, count, 1 / p.fanout_rate, slack=p.writer_slack_seconds
            )
            elapsed = time.monotonic() - t_write
            out["server_cpu_s_per_s"] = rate(bench.server.cpu_seconds() - cpu0, elapsed)
            out["cache_cpu_s_per_s"] = rate(tree_cpu_seconds(proxy.proc.pid) - proxy_cpu0, elapsed)
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
    out.update(delivery_figures(j, count, planned, on_time, werrors))
    # The close is one more change the readers fetch: count it as an append.
    out.update(
        all_delivered=j["all_delivered"],
        origin_reads=origin,
        origin_per_append=round(origin / (count + 1), 2) if count else None,
    )
    return out


__all__ = ["CACHES", "cache", "ceiling", "ms", "percentile"]
