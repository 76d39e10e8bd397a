"""The five scenarios of issue 6, and issue 13's AI generations (bench/ai.py),
run against one started server.

Each returns a flat dict of figures (``None`` where a figure could not be
measured) that always includes ``errors`` (failed requests, failed checks)
and a verification flag; a scenario that raises is recorded as failed and the
run goes on.

CPU figures: ``server_cpu_s_per_s`` and ``client_cpu_s_per_s`` are CPU-seconds
per second of the scenario's load (the cores kept busy on average: 1.0 is one
core all the time), not CPU per request; where readers get messages,
``cpu_us_per_delivery`` is the server's CPU per message delivered to a reader.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing as mp
import statistics
import time
from array import array
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from .httpclient import Connection, HTTPError
from .messages import WriterLedger, live_msg, verify_app_messages
from .servers import RunningServer
from .workers import catchup_payload, worker_entry

MiB = 1024 * 1024
# Fan-out readers "keep up" when every one of them got every message and no
# delivery lagged more than this (20 messages at 10 msgs/s): a falling-behind
# server shows as a growing lag long before it drops anything.
KEPT_UP_MAX_S = 2.0


@dataclass
class Params:
    """Sizes and durations; ``quick()`` is a smoke test of every code path."""

    warmup_seconds: float = 2.0
    append_seconds: float = 6.0
    append_writers: int = 8
    append_procs: int = 2
    batch_seconds: float = 6.0
    batch_producers: int = 8
    batch_size: int = 100
    catchup_bytes: int = 64 * MiB
    catchup_min_seconds: float = 2.0
    catchup_max_passes: int = 6
    catchup_max_seconds: float = 8.0
    live_seconds: float = 10.0
    live_interval: float = 0.020
    live_long_poll: int = 100
    live_sse: int = 100
    live_procs: int = 2
    fanout_levels: tuple[int, ...] = (1000, 5000, 10000)
    fanout_seconds: float = 5.0
    fanout_rate: float = 10.0
    fanout_procs: int = 4
    fanout_connect_seconds: float = 40.0
    # scenario 7: long-poll readers through each of these caches
    cache_readers: int = 5000
    caches: tuple[str, ...] = ("nginx", "varnish")
    # after the writer is done: time for deliveries still under way
    drain_seconds: float = 10.0
    # the closed-loop writer gives up this long after its planned end
    writer_slack_seconds: float = 3.0
    # 6. AI generations (bench/ai.py): each at ai_rate chunks/s, one SSE reader each
    ai_generations: int = 100
    ai_rate: float = 50.0
    ai_seconds: float = 10.0
    ai_reader_procs: int = 2

    @classmethod
    def quick(cls) -> Params:
        return cls(
            warmup_seconds=1.0,
            append_seconds=2.0,
            batch_seconds=2.0,
            catchup_bytes=8 * MiB,
            catchup_min_seconds=0.0,
            catchup_max_passes=1,
            live_seconds=2.0,
            live_long_poll=20,
            live_sse=20,
            fanout_levels=(100, 500),
            fanout_seconds=2.0,
            fanout_procs=2,
            fanout_connect_seconds=20.0,
            cache_readers=300,
            ai_generations=20,
            ai_seconds=3.0,
            ai_reader_procs=1,
        )


class WorkerError(RuntimeError):
    pass


class WorkerGroup:
    """Client processes running one role (see ``bench.workers``)."""

    def __init__(self, role: str, cfgs: list[dict]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for cfg in cfgs:
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=worker_entry, args=(role, cfg, theirs), daemon=True)
            p.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(p)

    @staticmethod
    def _recv(pipe: Any, timeout: float) -> tuple[str, Any]:
        if not pipe.poll(max(0.0, timeout)):
            raise WorkerError(f"no answer from a client process within {timeout:.0f}s")
        try:
            return pipe.recv()
        except EOFError:
            raise WorkerError("a client process died") from None

    async def gather(self, kind: str, within: float) -> list[Any]:
        answers = await asyncio.gather(
            *(asyncio.to_thread(self._recv, p, within) for p in self.pipes)
        )
        for got, payload in answers:
            if got == "error":
                raise WorkerError(f"client process failed: {payload}")
            if got != kind:
                raise WorkerError(f"client process said {got!r}, expected {kind!r}")
        return [payload for _, payload in answers]

    def broadcast(self, kind: str, payload: Any = None) -> None:
        for p in self.pipes:
            p.send((kind, payload))

    def close(self) -> None:
        for p in self.procs:
            p.join(timeout=10)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


def split(items: list, n: int) -> list[list]:
    """``items`` dealt round-robin into ``n`` non-empty lists (fewer if there are fewer items)."""
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


def percentile(values: list[float] | array, q: float, *, ordered: bool = False) -> float | None:
    if not values:
        return None
    ordered_values = values if ordered else sorted(values)
    k = min(len(ordered_values) - 1, max(0, round(q / 100 * (len(ordered_values) - 1))))
    return ordered_values[k]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 2) if seconds > 0 else None


def per_delivery_us(cpu_seconds: float, deliveries: int) -> float | None:
    """Microseconds of CPU per message delivered (``cpu_us_per_delivery``)."""
    return round(cpu_seconds / deliveries * 1e6, 1) if deliveries and cpu_seconds else None


def delivery_figures(
    j: dict, count: int, planned: int, on_time: bool, writer_errors: list[str]
) -> dict[str, Any]:
    """The figures of one mode's readers, judged as ``j`` (``Bench._judge``),
    behind a writer that made ``count`` of its ``planned`` appends."""
    bad = j["readers"] - j["complete"]
    samples = writer_errors + ([f"{bad} of {j['readers']} readers incomplete"] if bad else [])
    return {
        "messages": count,
        "planned": planned,
        "writer_on_time": on_time,
        "complete": j["complete"],
        "p50_ms": j["p50_ms"],
        "p99_ms": j["p99_ms"],
        "max_ms": j["max_ms"],
        "errors": len(writer_errors) + j["reader_errors"] + j["gaps"] + j["duplicates"] + bad,
        "verified": bad == 0,
        "error_samples": samples[:5],
    }


def latencies_of(blobs: list[bytes]) -> array:
    out = array("d")
    for b in blobs:
        out.frombytes(b)
    return out


class Bench:
    """The scenarios against one running server."""

    def __init__(self, server: RunningServer, params: Params, run_id: str, log: Any) -> None:
        self.server = server
        self.p = params
        self.run_id = run_id
        self.log = log
        self.host, self.port = server.host, server.port

    def path(self, name: str) -> str:
        return f"/v1/stream/{self.run_id}-{name}"

    def base_cfg(self) -> dict:
        return {"host": self.host, "port": self.port}

    async def closed_loop(
        self, role: str, cfgs: list[dict], seconds: float
    ) -> tuple[list[dict], float, float]:
        """Client processes of ``role`` (writers: each waits for its answer before
        sending again) for ``seconds`` from one start; returns their results, the
        start (``time.monotonic()``) and the server's CPU-seconds meanwhile."""
        group = WorkerGroup(role, cfgs)
        try:
            await group.gather("ready", 60)
            start_at = time.monotonic() + 0.2
            cpu0 = self.server.cpu_seconds()
            group.broadcast("go", {"start_at": start_at, "end_at": start_at + seconds})
            results = await group.gather("done", seconds + 90)
            return results, start_at, self.server.cpu_seconds() - cpu0
        finally:
            group.close()

    def reader_cfgs(
        self, path: str, readers: int, mode: str, host: str = "", port: int = 0
    ) -> list[dict]:
        """Configs of the ``live`` client processes for ``readers`` readers of
        ``path`` (``mode``: ``"sse"`` or ``"long_poll"``), dealt over
        ``fanout_procs``, through ``host:port`` (default: the server)."""
        p = self.p
        connect_by = time.monotonic() + p.fanout_connect_seconds
        finish_by = connect_by + p.fanout_seconds + p.writer_slack_seconds + p.drain_seconds + 5
        procs = max(1, min(p.fanout_procs, readers))
        return [
            {
                "host": host or self.host,
                "port": port or self.port,
                "path": path,
                "long_poll": 0,
                "sse": 0,
                mode: readers // procs + (i < readers % procs),
                "connect_by": connect_by,
                "finish_by": finish_by,
                "connect_concurrency": 100,
            }
            for i in range(procs)
        ]

    async def create(self, conn: Connection, path: str, content_type: str) -> None:
        r = await conn.request("PUT", path, {"Content-Type": content_type})
        if r.status not in (200, 201):
            raise RuntimeError(f"PUT {path}: HTTP {r.status} {r.body[:200]!r}")

    async def read_json(self, conn: Connection, path: str) -> list[Any]:
        """Every element of a JSON stream, following Stream-Next-Offset to the tail."""
        offset, elements = "-1", []
        for _ in range(1_000_000):
            async with asyncio.timeout(60):
                r = await conn.request("GET", f"{path}?offset={quote(offset)}")
            if r.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {r.status} {r.body[:200]!r}")
            batch = orjson.loads(r.body) if r.body else []
            elements.extend(batch)
            offset = r.headers.get("stream-next-offset", offset)
            if r.headers.get("stream-up-to-date") == "true":
                return elements
            if not batch:
                raise RuntimeError(f"GET {path}: empty chunk before the tail")
        raise RuntimeError(f"GET {path}: did not reach the tail")

    async def warmup(self) -> None:
        """A few seconds of scenario 1 before measuring, for every server alike.

        Node's JIT and heap sizing, and our connection pools, otherwise make
        the first seconds of whichever scenario comes first slower.
        """
        await self.appends(1, seconds=self.p.warmup_seconds, name="warmup")

    # ------------------------------------------------------------------ 1
    async def appends(self, streams: int, seconds: float = 0.0, name: str = "append") -> dict:
        p = self.p
        seconds = seconds or p.append_seconds
        conn = Connection(self.host, self.port)
        paths = [self.path(f"{name}{streams}-{i}") for i in range(streams)]
        for path in paths:
            await self.create(conn, path, "application/json")
        writers = [(w, paths[w % streams]) for w in range(p.append_writers)]
        cfgs = [{**self.base_cfg(), "writers": ws} for ws in split(writers, p.append_procs)]
        results, start_at, server_cpu = await self.closed_loop("append", cfgs, seconds)
        ledgers: dict[int, WriterLedger] = {}
        errors, samples = 0, []
        for res in results:
            errors += res["errors"]
            samples += res["error_samples"]
            for w, led in res["ledgers"].items():
                ledgers[int(w)] = WriterLedger(led["sent"], set(led["uncertain"]))
        lat = latencies_of([r["latencies"] for r in results])
        elapsed = max(r["last_ack"] for r in results) - start_at
        acked = sum(led.sent - len(led.uncertain) for led in ledgers.values())
        problems = 0
        for path in paths:
            mine = {w: ledgers[w] for w, wp in writers if wp == path}
            n, detail = verify_app_messages(await self.read_json(conn, path), mine)
            problems += n
            samples += detail
        conn.close()
        return {
            "msgs_per_s": round(acked / elapsed, 1) if elapsed > 0 else None,
            "p50_ms": ms(percentile(lat, 50)),
            "p99_ms": ms(percentile(lat, 99)),
            "acked": acked,
            # a client near 1.0 per process would be the limit
            "client_cpu_s_per_s": rate(sum(r["cpu_s"] for r in results), elapsed),
            "server_cpu_s_per_s": rate(server_cpu, elapsed),
            "errors": errors + problems,
            "verified": problems == 0,
            "error_samples": samples[:5],
        }

    # ------------------------------------------------------------------ 2
    async def batched(self) -> dict:
        p = self.p
        conn = Connection(self.host, self.port)
        path = self.path("batched")
        await self.create(conn, path, "application/json")
        producers = [(i, path) for i in range(p.batch_producers)]
        cfgs = [
            {**self.base_cfg(), "producers": ps, "batch": p.batch_size}
            for ps in split(producers, p.append_procs)
        ]
        results, start_at, server_cpu = await self.closed_loop("produce", cfgs, p.batch_seconds)
        ledgers = {
            int(w): WriterLedger(led["sent"], set(led["uncertain"]))
            for res in results
            for w, led in res["ledgers"].items()
        }
        errors = sum(r["errors"] for r in results)
        samples = [s for r in results for s in r["error_samples"]]
        elapsed = max(r["last_ack"] for r in results) - start_at
        msgs = sum(r["acked_msgs"] for r in results)
        nbytes = sum(r["acked_bytes"] for r in results)
        lat = latencies_of([r["latencies"] for r in results])
        problems, detail = verify_app_messages(await self.read_json(conn, path), ledgers)
        conn.close()
        return {
            "msgs_per_s": round(msgs / elapsed, 1) if elapsed > 0 else None,
            "mb_per_s": round(nbytes / MiB / elapsed, 2) if elapsed > 0 else None,
            "p50_ms": ms(percentile(lat, 50)),
            "p99_ms": ms(percentile(lat, 99)),
            "retries": sum(r["retries"] for r in results),
            "acked": msgs,
            # a client near 1.0 per process would be the limit
            "client_cpu_s_per_s": rate(sum(r["cpu_s"] for r in results), elapsed),
            "server_cpu_s_per_s": rate(server_cpu, elapsed),
            "errors": errors + problems,
            "verified": problems == 0,
            "error_samples": (samples + detail)[:5],
        }

    # ------------------------------------------------------------------ 3
    async def catchup(self) -> dict:
        p = self.p
        conn = Connection(self.host, self.port)
        path = self.path("catchup")
        await self.create(conn, path, "application/octet-stream")
        seed = 6
        data = catchup_payload(p.catchup_bytes, seed)
        t0 = time.monotonic()
        view = memoryview(data)
        for i in range(0, len(data), MiB):
            async with asyncio.timeout(120):
                r = await conn.request(
                    "POST",
                    path,
                    {"Content-Type": "application/octet-stream"},
                    bytes(view[i : i + MiB]),
                )
            if r.status not in (200, 204):
                raise RuntimeError(f"upload at {i}: HTTP {r.status} {r.body[:200]!r}")
        upload = time.monotonic() - t0
        conn.close()
        del data, view
        out: dict[str, Any] = {"upload_mb_per_s": round(p.catchup_bytes / MiB / upload, 1)}
        errors, samples = 0, []
        for readers in (1, 4):
            cfg = {
                **self.base_cfg(),
                "path": path,
                "size": p.catchup_bytes,
                "seed": seed,
                "min_time": p.catchup_min_seconds,
                "max_time": p.catchup_max_seconds,
                "max_passes": p.catchup_max_passes,
            }
            group = WorkerGroup("catchup", [cfg] * readers)
            try:
                await group.gather("ready", 60)
                group.broadcast("go", {"start_at": time.monotonic() + 0.2})
                results = await group.gather("done", 300)
            finally:
                group.close()
            total = sum(r["bytes"] for r in results)
            elapsed = max(r["elapsed"] for r in results)
            out[f"readers{readers}_mb_per_s"] = round(total / MiB / elapsed, 1)
            errors += sum(r["errors"] for r in results)
            samples += [s for r in results for s in r["error_samples"]]
        out.update(errors=errors, verified=errors == 0, error_samples=samples[:5])
        return out

    # ------------------------------------------------------------------ 4 and 5
    async def _live_writer(
        self, conn: Connection, path: str, count: int, interval: float, slack: float
    ) -> tuple[str, int, list[str], bool]:
        """Append up to ``count`` messages, one every ``interval`` s, then close the stream.

        Closed loop (each append waits for its acknowledgement), so a server
        that answers slowly gets fewer appends: the writer stops ``slack``
        seconds after the planned end. Returns the digest of what was sent,
        the number sent, the errors, and whether all ``count`` went out in time.
        """
        head = conn.build("POST", path, {"Content-Type": "application/json"}, live_msg(0, 0))
        head = head[: -len(live_msg(0, 0))]
        digest = hashlib.sha256()
        errors: list[str] = []
        t0 = time.monotonic()
        stop_by = t0 + count * interval + slack
        sent = 0
        for seq in range(count):
            if time.monotonic() > stop_by:
                break
            delay = t0 + seq * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = live_msg(seq, time.monotonic_ns() // 1000)
            try:
                async with asyncio.timeout(30):
                    r = await conn.send(head + body)
                if r.status not in (200, 204):
                    errors.append(f"append {seq}: HTTP {r.status} {r.body[:100]!r}")
            except (HTTPError, TimeoutError, OSError) as e:
                errors.append(f"append {seq}: {e!r}")
            digest.update(body + b"\n")
            sent += 1
        async with asyncio.timeout(30):
            r = await conn.request("POST", path, {"Stream-Closed": "true"}, b"")
        if r.status not in (200, 204):
            errors.append(f"close: HTTP {r.status} {r.body[:100]!r}")
        return digest.hexdigest(), sent, errors, sent == count

    def _judge(self, mode_results: list[dict], count: int, digest: str) -> dict:
        readers = sum(m["readers"] for m in mode_results)
        complete = sum(
            c for m in mode_results for n, d, c in m["outcomes"] if n == count and d == digest
        )
        closed = sum(m["closed"] for m in mode_results)
        lat = sorted(latencies_of([m["latencies"] for m in mode_results]))
        return {
            "readers": readers,
            "subscribed": sum(m["subscribed"] for m in mode_results),
            "complete": complete,
            "all_delivered": complete == readers and closed == readers,
            "gaps": sum(m["gaps"] for m in mode_results),
            "duplicates": sum(m["duplicates"] for m in mode_results),
            "reader_errors": sum(m["errors"] for m in mode_results),
            "reconnects": sum(m["reconnects"] for m in mode_results),
            "p50_ms": ms(percentile(lat, 50, ordered=True)),
            "p99_ms": ms(percentile(lat, 99, ordered=True)),
            "max_ms": ms(lat[-1] if lat else None),
            "mean_ms": ms(statistics.fmean(lat) if lat else None),
            "deliveries": len(lat),
        }

    async def live(self) -> dict:
        p = self.p
        conn = Connection(self.host, self.port)
        path = self.path("live")
        await self.create(conn, path, "application/json")
        count = round(p.live_seconds / p.live_interval)
        now = time.monotonic()
        connect_by = now + 30
        finish_by = connect_by + p.live_seconds + p.writer_slack_seconds + p.drain_seconds + 5
        cfgs = []
        for i in range(p.live_procs):
            lp = p.live_long_poll // p.live_procs + (i < p.live_long_poll % p.live_procs)
            sse = p.live_sse // p.live_procs + (i < p.live_sse % p.live_procs)
            cfgs.append(
                {
                    **self.base_cfg(),
                    "path": path,
                    "long_poll": lp,
                    "sse": sse,
                    "connect_by": connect_by,
                    "finish_by": finish_by,
                }
            )
        t_spawn = time.monotonic()
        group = WorkerGroup("live", cfgs)
        try:
            ready = await group.gather("ready", 60)
            await asyncio.sleep(0.5)  # the first long-polls reach the server
            t_write = time.monotonic()
            cpu0 = self.server.cpu_seconds()
            planned = count
            digest, count, werrors, on_time = await self._live_writer(
                conn, path, count, p.live_interval, slack=p.writer_slack_seconds
            )
            server_cpu = rate(self.server.cpu_seconds() - cpu0, time.monotonic() - t_write)
            group.broadcast("finish_by", time.monotonic() + p.drain_seconds)
            results = await group.gather("done", p.drain_seconds + 60)
            # From the first append to the last delivery, as in fanout_level.
            delivery_cpu = self.server.cpu_seconds() - cpu0
            client_cpu = rate(sum(r["cpu_s"] for r in results), time.monotonic() - t_spawn)
        finally:
            group.close()
            conn.close()
        out: dict[str, Any] = {
            "client_cpu_s_per_s": client_cpu,
            "server_cpu_s_per_s": server_cpu,
            "messages": count,
            "planned": planned,
            "writer_on_time": on_time,
        }
        errors = len(werrors)
        samples = list(werrors[:5])
        for mode, key in (("long-poll", "lp"), ("sse", "sse")):
            j = self._judge([r[mode] for r in results], count, digest)
            for k, v in j.items():
                out[f"{key}_{k}"] = v
            bad = j["readers"] - j["complete"]
            errors += j["reader_errors"] + j["gaps"] + j["duplicates"] + bad
            if bad:
                samples.append(f"{mode}: {bad} of {j['readers']} readers incomplete or wrong")
        out["cpu_us_per_delivery"] = per_delivery_us(
            delivery_cpu, out["lp_deliveries"] + out["sse_deliveries"]
        )
        out["subscribed"] = sum(r["subscribed"] for r in ready)
        out["all_delivered"] = out["lp_all_delivered"] and out["sse_all_delivered"]
        out.update(errors=errors, verified=out["all_delivered"], error_samples=samples[:5])
        return out

    async def ai_generations(self) -> dict:
        from .ai import run

        return await run(self)

    async def fanout_level(self, readers: int) -> dict:
        p = self.p
        conn = Connection(self.host, self.port)
        path = self.path(f"fanout{readers}")
        await self.create(conn, path, "application/json")
        await asyncio.sleep(0.5)
        rss_before = self.server.rss()
        now = time.monotonic()
        cfgs = self.reader_cfgs(path, readers, "sse")
        t_spawn = time.monotonic()
        group = WorkerGroup("live", cfgs)
        out: dict[str, Any] = {"readers": readers}
        delivery_cpu = 0.0
        try:
            ready = await group.gather("ready", p.fanout_connect_seconds + 60)
            subscribed = sum(r["subscribed"] for r in ready)
            out["connect_s"] = round(time.monotonic() - now, 1)
            await asyncio.sleep(1.0)  # let the server settle before measuring
            rss_idle = self.server.rss()
            out["subscribed"] = subscribed
            out["rss_before_mb"] = round(rss_before / MiB, 1)
            out["rss_idle_mb"] = round(rss_idle / MiB, 1)
            out["kb_per_conn"] = (
                round((rss_idle - rss_before) / 1024 / subscribed, 1) if subscribed else None
            )
            count = round(p.fanout_seconds * p.fanout_rate)
            t_write = time.monotonic()
            cpu0 = self.server.cpu_seconds()
            planned = count
            digest, count, werrors, on_time = await self._live_writer(
                conn, path, count, 1 / p.fanout_rate, slack=p.writer_slack_seconds
            )
            group.broadcast("finish_by", time.monotonic() + p.drain_seconds)
            t_drain = time.monotonic()
            out["server_cpu_s_per_s"] = rate(self.server.cpu_seconds() - cpu0, t_drain - t_write)
            results = await group.gather("done", p.drain_seconds + 60)
            t_done = time.monotonic()
            # Everything the server did from the first append to the last
            # delivery (idle readers cost nothing), per message delivered.
            delivery_cpu = self.server.cpu_seconds() - cpu0
            out["client_cpu_s_per_s"] = rate(sum(r["cpu_s"] for r in results), t_done - t_spawn)
            out["write_s"] = round(t_drain - t_write, 1)
            out["drain_s"] = round(t_done - t_drain, 1)
        finally:
            group.close()
            conn.close()
        j = self._judge([r["sse"] for r in results], count, digest)
        out.update(delivery_figures(j, count, planned, on_time, werrors))
        out.update(
            cpu_us_per_delivery=per_delivery_us(delivery_cpu, j["deliveries"]),
            kept_up=out["verified"]
            and on_time
            and not werrors
            and subscribed == readers
            and j["max_ms"] is not None
            and j["max_ms"] <= KEPT_UP_MAX_S * 1000,
            reconnects=j["reconnects"],
        )
        return out
