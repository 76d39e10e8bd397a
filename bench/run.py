"""Benchmark: django-durable-streams beside the Node reference server, same machine, one run.

    make bench                      # installs what it needs, full run (< 10 min)
    make bench BENCH_ARGS=--quick   # a few seconds per scenario: smoke test
    .venv/bin/python -m bench --help

Our server is the example project under daphne; ``BENCH_SERVER=uvicorn`` or
``granian`` (or ``--server``) picks another ASGI server, ``BENCH_SERVER_CMD``
(or ``--server-cmd``) any command line, with ``{python}`` and ``{port}``
filled in. Results: a side-by-side table, a ``BENCH_JSON {...}`` line and
``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from . import extra
from .scenarios import Bench, Params
from .servers import (
    BENCH_DB,
    RESULTS,
    ROOT,
    SERVER_COMMANDS,
    RunningServer,
    ours_env,
    ours_spec,
    prepare_ours_database,
    reference_specs,
)
from .workers import raise_nofile_limit, run_loop

SERVER_KEYS = ("ours", "ref-memory", "ref-file")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="a few seconds per scenario, fewer readers"
    )
    ap.add_argument(
        "--servers",
        default=",".join(SERVER_KEYS),
        help=f"comma-separated subset of {','.join(SERVER_KEYS)} (default: all)",
    )
    ap.add_argument(
        "--server",
        default=os.environ.get("BENCH_SERVER", "daphne"),
        choices=sorted(SERVER_COMMANDS),
        help="ASGI server for ours (env BENCH_SERVER; default daphne)",
    )
    ap.add_argument(
        "--server-cmd",
        default=os.environ.get("BENCH_SERVER_CMD") or None,
        help="full command line for ours, with {python} and {port} (env BENCH_SERVER_CMD)",
    )
    ap.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6,7,8",
        help="comma-separated subset of 1-8 (default: all; 6: the trivial-app ceiling, "
        "7: long-poll readers through a cache (--cache), 8: AI generations; ours only)",
    )
    ap.add_argument(
        "--cache",
        default="nginx,varnish",
        help="scenario 7's caches, comma-separated subset of nginx,varnish (default: both)",
    )
    ap.add_argument(
        "--cache-readers", type=int, default=None, help="scenario 7's long-poll readers"
    )
    ap.add_argument("--fanout", default=None, help="fan-out levels, e.g. 1000,5000,10000")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"), help="JSON results file")
    ap.add_argument(
        "--report",
        metavar="JSON",
        help="print the table and targets of an earlier run's JSON file, run nothing",
    )
    return ap.parse_args(argv)


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
                break
    except OSError:
        pass

    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, cwd=ROOT, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = out(["git", "rev-parse", "--short", "HEAD"])
    if out(["git", "status", "--porcelain", "--untracked-files=no", "--", "durable_streams"]):
        commit += "+dirty"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": out([shutil.which("node") or "node", "--version"]),
        "commit": commit,
        # other work on the machine skews every figure: recorded at start and end
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- report


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _lat(*vals: Any) -> str:
    return " / ".join(_num(v, 1) for v in vals)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _get(res: dict, scenario: str, key: str) -> Any:
    return res.get(scenario, {}).get(key)


def table_rows(params: Params) -> list[tuple[str, Callable[[dict], str]]]:
    rows: list[tuple[str, Callable[[dict], str]]] = []

    def add(label: str, fn: Callable[[dict], str]) -> None:
        rows.append((label, fn))

    for n in (1, 8):
        sc = f"appends_{n}"
        add(
            f"1. appends, {n} stream{'s' if n > 1 else ''}: msgs/s",
            lambda r, sc=sc: _num(_get(r, sc, "msgs_per_s")),
        )
        add(
            "   latency p50 / p99 ms",
            lambda r, sc=sc: _lat(_get(r, sc, "p50_ms"), _get(r, sc, "p99_ms")),
        )
    add("2. batched producer (100/POST): msgs/s", lambda r: _num(_get(r, "batched", "msgs_per_s")))
    add("   MB/s", lambda r: _num(_get(r, "batched", "mb_per_s"), 1))
    add(
        f"3. catch-up {params.catchup_bytes >> 20} MB, 1 reader: MB/s",
        lambda r: _num(_get(r, "catchup", "readers1_mb_per_s")),
    )
    add("   4 readers: MB/s (total)", lambda r: _num(_get(r, "catchup", "readers4_mb_per_s")))
    add(
        "4. live long-poll p50 / p99 / max ms",
        lambda r: _lat(*(_get(r, "live", f"lp_{k}") for k in ("p50_ms", "p99_ms", "max_ms"))),
    )
    add(
        "   live SSE p50 / p99 / max ms",
        lambda r: _lat(*(_get(r, "live", f"sse_{k}") for k in ("p50_ms", "p99_ms", "max_ms"))),
    )
    add("   every reader got every message", lambda r: _num(_get(r, "live", "all_delivered")))
    add("   server CPU us per delivery", lambda r: _num(_get(r, "live", "cpu_us_per_delivery"), 1))
    for n in params.fanout_levels:
        sc = f"fanout_{n}"

        def kept(r: dict, sc: str = sc, n: int = n) -> str:
            res = r.get(sc, {})
            if "skipped" in res:
                return "skipped"
            if "kept_up" not in res:
                return "failed" if res else "-"
            return f"{_num(res['kept_up'])} ({_num(res.get('complete'))}/{n:,})"

        add(f"5. fan-out {n:,} SSE: kept up (complete)", kept)
        add(
            "   delivery p99 / max ms",
            lambda r, sc=sc: _lat(_get(r, sc, "p99_ms"), _get(r, sc, "max_ms")),
        )
        add("   server KB per idle reader", lambda r, sc=sc: _num(_get(r, sc, "kb_per_conn"), 1))
        add(
            "   server CPU us per delivery",
            lambda r, sc=sc: _num(_get(r, sc, "cpu_us_per_delivery"), 1),
        )

        def appended(r: dict, sc: str = sc) -> str:
            res = r.get(sc, {})
            if res.get("planned") is None:
                return "-"
            return f"{res.get('messages')}/{res['planned']}"

        add("   appends made at 10/s (of planned)", appended)

    add(
        "6. ceiling: trivial ASGI app, same server: req/s",
        lambda r: _num(_get(r, "ceiling", "msgs_per_s")),
    )
    add(
        "   ours appends (1 stream) / ceiling",
        lambda r: _ratio(_get(r, "appends_1", "msgs_per_s"), _get(r, "ceiling", "msgs_per_s")),
    )
    for kind in params.caches:
        sc = extra.CACHES[kind]
        add(
            f"7. cache: {params.cache_readers:,} long-poll via {kind}: all got all",
            lambda r, sc=sc: _num(_get(r, sc, "all_delivered")),
        )
        add(
            "   delivery p50 / p99 / max ms",
            lambda r, sc=sc: _lat(*(_get(r, sc, k) for k in ("p50_ms", "p99_ms", "max_ms"))),
        )
        add(
            "   origin requests per append",
            lambda r, sc=sc: _num(_get(r, sc, "origin_per_append"), 2),
        )
        add("   cache CPU s/s", lambda r, sc=sc: _num(_get(r, sc, "cache_cpu_s_per_s"), 2))
    add(
        f"8. {params.ai_generations} AI generations, {params.ai_rate:g} chunks/s: SSE p50 / p99 ms",
        lambda r: _lat(_get(r, "ai", "p50_ms"), _get(r, "ai", "p99_ms")),
    )
    add(
        "   appends per generation per linger interval (max)",
        lambda r: _num(_get(r, "ai", "appends_per_linger_max"), 2),
    )
    add("   server CPU us per delivery", lambda r: _num(_get(r, "ai", "cpu_us_per_delivery"), 1))

    def total_errors(r: dict) -> str:
        return _num(sum(int(v.get("errors") or 0) for v in r.values() if isinstance(v, dict)))

    def checks(r: dict) -> str:
        ran = [v for v in r.values() if isinstance(v, dict) and "skipped" not in v]
        return f"{sum(1 for v in ran if v.get('verified'))}/{len(ran)}"

    add("errors (all scenarios)", total_errors)
    add("scenarios verified (byte-exact, in order)", checks)
    return rows


def render_table(labels: dict[str, str], results: dict[str, dict], params: Params) -> str:
    keys = [k for k in SERVER_KEYS if k in results]
    header = ["metric", *(labels[k] for k in keys)]
    body = [[label, *(fn(results[k]) for k in keys)] for label, fn in table_rows(params)]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if i else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), sep, *(line(r) for r in body)])


def judge_targets(results: dict[str, dict]) -> list[dict]:
    """The targets of issue 6, judged on this run's figures (None: not measured)."""
    ours = results.get("ours", {})
    mem = results.get("ref-memory", {})
    fil = results.get("ref-file", {})
    out = []

    def target(name: str, value: Any, met: bool | None) -> None:
        out.append({"target": name, "value": value, "met": met})

    a = _get(ours, "appends_1", "msgs_per_s")
    af = _get(fil, "appends_1", "msgs_per_s")
    am = _get(mem, "appends_1", "msgs_per_s")
    r = round(a / af, 2) if a and af else None
    target(
        "appends (1 stream) >= 3x ref file-backed", f"{r}x" if r else None, r >= 3 if r else None
    )
    r = round(a / am, 2) if a and am else None
    target(
        "appends (1 stream) >= 0.5x ref in-memory", f"{r}x" if r else None, r >= 0.5 if r else None
    )
    b = _get(ours, "batched", "msgs_per_s")
    bf = _get(fil, "batched", "msgs_per_s")
    r = round(b / bf, 2) if b and bf else None
    target("batched appends >= ref file-backed", f"{r}x" if r else None, r >= 1 if r else None)
    c = _get(ours, "catchup", "readers1_mb_per_s")
    target("catch-up, 1 reader >= 250 MB/s", c, c >= 250 if c is not None else None)
    lp = _get(ours, "live", "lp_p99_ms")
    sse = _get(ours, "live", "sse_p99_ms")
    ok = _get(ours, "live", "all_delivered")
    met = None if lp is None or sse is None else (lp < 30 and sse < 30 and bool(ok))
    target("live p99 < 30 ms, long-poll and SSE, 100 readers each", f"{lp} / {sse} ms", met)
    ce = _get(ours, "ceiling", "msgs_per_s")
    r = round(a / ce, 2) if a and ce else None
    target(
        "appends (1 stream) >= 0.8x the ceiling (trivial app, same server)",
        r,
        r >= 0.8 if r else None,
    )
    for kind, sc in extra.CACHES.items():
        cache = ours.get(sc, {})
        if cache.get("origin_per_append") is None:
            continue
        per, p99 = cache["origin_per_append"], cache.get("p99_ms")
        met = bool(cache.get("all_delivered")) and per <= 2 and p99 is not None and p99 < 1000
        target(
            f"cache ({kind}): {cache.get('readers')} long-poll readers, all delivered, <= 2 origin "
            "requests per append, p99 < 1 s",
            f"{per} per append, p99 {p99} ms, all delivered {cache.get('all_delivered')}",
            met,
        )
    f = ours.get("fanout_10000", {})
    if f and "kept_up" in f:
        p99, kb = f.get("p99_ms"), f.get("kb_per_conn")
        met = bool(f["kept_up"]) and p99 is not None and p99 < 250 and kb is not None and kb < 50
        target(
            "fan-out 10,000 SSE kept up, p99 < 250 ms, < 50 KB/reader",
            f"kept up {f['kept_up']}, p99 {p99} ms, {kb} KB",
            met,
        )
    else:
        target(
            "fan-out 10,000 SSE kept up, p99 < 250 ms, < 50 KB/reader",
            None,
            None if not f else False,
        )
    p99 = _get(ours, "ai", "p99_ms")
    per = _get(ours, "ai", "appends_per_linger_max")
    met = None if p99 is None or per is None else (p99 < 100 and per <= 1.0)
    target(
        "AI generations: p99 chunk-to-reader < 100 ms, <= 1 append per linger interval",
        f"{p99} ms, {per}",
        met,
    )
    return out


# --------------------------------------------------------------------------- run


def summary(name: str, res: dict) -> str:
    if "error" in res:
        return f"FAILED: {res['error']}"
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    keys = [
        k
        for k in res
        if k.endswith(
            ("per_s", "_ms", "kept_up", "kb_per_conn", "all_delivered", "_linger_max", "_delivery")
        )
    ]
    figures = ", ".join(f"{k}={res[k]}" for k in keys)
    tail = f"errors={res.get('errors')} verified={res.get('verified')}"
    samples = res.get("error_samples") or []
    return f"{figures}, {tail}" + (f"  e.g. {samples[0]}" if samples else "")


async def run_server(spec: Any, params: Params, scenarios: set[str], run_id: str) -> dict:
    """Every selected scenario against one server; each fan-out level on a fresh process.

    A fresh process per fan-out level gives its memory figure a clean
    baseline (no readers, buffers or garbage left from earlier scenarios).
    """
    if spec.key == "ours":
        python = spec.command[0]
        print(f"   preparing database {BENCH_DB} (drop, create, migrate)", flush=True)
        spec.env = ours_env(prepare_ours_database(python))
    servers: list[RunningServer] = []

    async def fresh(tag: str) -> Bench:
        if servers:
            servers[-1].stop()
        server = RunningServer(spec, tag)
        servers.append(server)
        await server.start()
        print(f"   [{tag}] {' '.join(server.command)}  (pid {server.proc.pid})", flush=True)
        return Bench(server, params, run_id, print)

    plan: list[tuple[str, str, str, tuple]] = [
        ("1", "appends_1", "appends", (1,)),
        ("1", "appends_8", "appends", (8,)),
        ("2", "batched", "batched", ()),
        ("3", "catchup", "catchup", ()),
        ("4", "live", "live", ()),
    ]
    plan += [("5", f"fanout_{n}", "fanout_level", (n,)) for n in params.fanout_levels]
    if spec.key == "ours":  # the generations write through our in-process API
        plan.append(("8", "ai", "ai_generations", ()))
    plan = [step for step in plan if step[0] in scenarios]
    results: dict[str, dict] = {}
    fanout_reached = True
    bench: Bench | None = None
    try:
        for _number, name, method, args in plan:
            fanout = name.startswith("fanout")
            if fanout and not fanout_reached:
                results[name] = {"skipped": "a lower level was not reached", "kept_up": False}
                print(f"   {name}: skipped (a lower level was not reached)", flush=True)
                continue
            t0 = time.monotonic()
            try:
                if bench is None or fanout:
                    bench = await fresh(name if fanout else "main")
                    if not fanout and params.warmup_seconds:
                        await bench.warmup()
                if not bench.server.alive():
                    raise RuntimeError(f"server exited: {bench.server.log_tail(300)}")
                results[name] = await getattr(bench, method)(*args)
            except Exception as e:  # recorded; the run goes on
                results[name] = {
                    "error": f"{type(e).__name__}: {e}"[:500],
                    "errors": 1,
                    "verified": False,
                }
                if fanout:
                    results[name]["kept_up"] = False
            if fanout and results[name].get("subscribed") != args[0]:
                fanout_reached = False
            print(
                f"   {name} ({time.monotonic() - t0:.0f}s): {summary(name, results[name])}",
                flush=True,
            )
        if spec.key == "ours":
            await _extra_rows(spec, params, scenarios, run_id, results, fresh)
    finally:
        for server in servers:
            server.stop()
            if server.log_path.exists() and server.log_path.stat().st_size == 0:
                server.log_path.unlink()
    return results


async def _extra_rows(spec, params, scenarios, run_id, results, fresh) -> None:
    """Scenarios 6 (the trivial-app ceiling) and 7 (through each cache), ours only."""
    steps = []
    if "7" in scenarios:
        for kind in params.caches:
            steps.append((extra.CACHES[kind], lambda kind=kind: _cache_row(fresh, params, kind)))
    if "6" in scenarios:
        steps.append(("ceiling", lambda: extra.ceiling(spec, params, run_id)))
    for name, run in steps:
        t0 = time.monotonic()
        try:
            results[name] = await run()
        except Exception as e:  # recorded; the run goes on
            results[name] = {"error": f"{type(e).__name__}: {e}"[:500], "errors": 1}
        print(f"   {name} ({time.monotonic() - t0:.0f}s): {summary(name, results[name])}")


async def _cache_row(fresh, params, kind: str) -> dict:
    bench = await fresh(extra.CACHES[kind])
    result = await extra.cache(bench, params.cache_readers, kind)
    bench.server.stop()
    return result


async def amain(args: argparse.Namespace) -> dict | None:
    params = Params.quick() if args.quick else Params()
    params.caches = tuple(c.strip() for c in args.cache.split(",") if c.strip())
    unknown_caches = [c for c in params.caches if c not in extra.CACHES]
    if unknown_caches:
        print(f"unknown cache(s): {', '.join(unknown_caches)}", file=sys.stderr)
        return None
    if args.cache_readers:
        params.cache_readers = args.cache_readers
    if args.fanout:
        params.fanout_levels = tuple(int(x) for x in args.fanout.split(",") if x)
    scenarios = {s.strip() for s in args.scenarios.split(",")}
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    specs = {s.key: s for s in [ours_spec(args.server_cmd, args.server), *reference_specs()]}
    unknown = [w for w in wanted if w not in specs]
    if unknown:
        print(f"unknown server(s): {', '.join(unknown)}", file=sys.stderr)
        return None
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    run_id = f"bench{int(time.time())}"
    machine = machine_info()
    print(
        f"benchmark {'(quick) ' if args.quick else ''}on {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), commit {machine['commit']}",
        flush=True,
    )
    for old_log in RESULTS.glob("*.log"):  # server logs of this run only
        old_log.unlink()
    results: dict[str, dict] = {}
    labels: dict[str, str] = {}
    commands: dict[str, str] = {}
    for key in SERVER_KEYS:
        if key not in wanted:
            continue
        spec = specs[key]
        labels[key] = spec.label
        commands[key] = " ".join(spec.command)
        print(f"== {spec.label}", flush=True)
        try:
            results[key] = await run_server(spec, params, scenarios, run_id)
        except Exception as e:
            print(f"   FAILED to run: {type(e).__name__}: {e}", flush=True)
            results[key] = {"server": {"error": f"{type(e).__name__}: {e}"[:500], "errors": 1}}
    elapsed = time.monotonic() - t0
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    targets = judge_targets(results)
    print()
    print(render_table(labels, results, params))
    print()
    print("targets (issue 6), ours on this run:")
    for t in targets:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        print(f"  [{mark}] {t['target']}: {t['value']}")
    print(f"\ntotal time {elapsed:.0f}s")
    report = {
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": args.quick,
        "elapsed_s": round(elapsed, 1),
        "machine": machine,
        "servers": {k: {"label": labels[k], "command": commands[k]} for k in labels},
        "params": {k: v for k, v in vars(params).items()},
        "results": results,
        "targets": targets,
    }
    return report


def write_report(report: dict, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {os.path.relpath(out, ROOT)}")
    print("BENCH_JSON " + json.dumps(report, separators=(",", ":")))


def print_report(path: str) -> None:
    with open(path) as fh:
        report = json.load(fh)
    fields = {f.name for f in dataclasses.fields(Params)}
    params = Params(**{k: v for k, v in report["params"].items() if k in fields})
    params.fanout_levels = tuple(params.fanout_levels)
    params.caches = tuple(params.caches)
    labels = {k: v["label"] for k, v in report["servers"].items()}
    m = report["machine"]
    print(
        f"{report['date']}, {m['cpus']} CPUs ({m['cpu_model']}), commit {m['commit']}, "
        f"load average {m.get('load_average_start')} -> {m.get('load_average_end')}, "
        f"{report['elapsed_s']:.0f}s\n"
    )
    print(render_table(labels, report["results"], params))
    print()
    for t in report["targets"]:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        print(f"- [{mark}] {t['target']}: {t['value']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print_report(args.report)
        return 0
    raise_nofile_limit()
    report = run_loop(amain(args))
    if report is None:
        return 2
    write_report(report, args.out)
    return 0
