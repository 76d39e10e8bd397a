"""Fan-out in one process: N SSE readers of one stream, M appends at a fixed rate.

A bounded stand-alone run of ``make bench``'s scenario 5 against our server
alone, on a database of its own: the server's CPU per delivered message
(utime + stime of the server and its workers from the first append to the
last delivery, divided by the deliveries), delivery latency p50/p99/max, and
the memory per idle reader (RSS after connecting minus before)::

    .venv/bin/python -m bench.fanout --readers 500,2000 --server uvicorn
    .venv/bin/python -m bench.fanout --readers 10000 --server serve   # make serve's preset
    .venv/bin/python -m bench.fanout --readers 500 --profile /tmp/fanout.prof

``--profile`` runs a single-process uvicorn under cProfile (the profile is
written when the server stops); its CPU figures are the profiler's, not the
server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from .scenarios import Bench, Params
from .servers import SERVER_COMMANDS, RunningServer, ours_env, ours_spec, prepare_ours_database
from .workers import raise_nofile_limit


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    ap.add_argument("--readers", default="500,2000", help="reader counts, one run each")
    ap.add_argument("--server", default="uvicorn", choices=sorted(SERVER_COMMANDS))
    ap.add_argument("--rate", type=float, default=10.0, help="appends per second")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds of appends")
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--db", default="ds_fanout_bench", help="database (dropped and re-created)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the server (uvicorn) into FILE")
    return ap.parse_args(argv)


async def amain(args: argparse.Namespace) -> list[dict]:
    command = None
    if args.profile:
        command = SERVER_COMMANDS["uvicorn"].replace(
            "{python} -m uvicorn", f"{{python}} -m cProfile -o {args.profile} -m uvicorn"
        )
    spec = ours_spec(command, args.server)
    spec.env = ours_env(prepare_ours_database(spec.command[0], args.db))
    params = Params(
        fanout_seconds=args.seconds,
        fanout_rate=args.rate,
        fanout_procs=args.procs,
        drain_seconds=5.0,
    )
    results = []
    for n in (int(x) for x in args.readers.split(",") if x):
        server = RunningServer(spec, f"fanout{n}")
        await server.start()
        try:
            bench = Bench(server, params, f"f{int(time.time())}", print)
            out = await bench.fanout_level(n)
        finally:
            if args.profile:
                # SIGINT: uvicorn shuts down cleanly and cProfile writes its file.
                import os
                import signal

                os.kill(server.proc.pid, signal.SIGINT)
                server.proc.wait(60)
            server.stop()
        out["server"] = args.server
        results.append(out)
        keys = ("readers", "subscribed", "messages", "complete", "cpu_us_per_delivery")
        keys += ("p50_ms", "p99_ms", "max_ms", "kb_per_conn", "writer_on_time", "errors")
        print(json.dumps({k: out.get(k) for k in keys}), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    raise_nofile_limit()
    asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    main()
