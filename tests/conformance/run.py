"""Run the official conformance suite against daphne servers started here.

Creates a fresh database, migrates it, and for each ASGI application given
(default: the example project's lean ``application`` and its URLconf-based
``django_application``) serves it on a free loopback port with a short
long-poll timeout (the suite's per-test limit is a few seconds), runs vitest
and stops the server. Exits non-zero if any run failed.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database_url(name: str) -> str:
    sys.path.insert(0, str(ROOT))
    from example_project.embedded import database_url

    url = database_url("postgres")
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.rsplit("/", 1)[0] + "/" + name


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/v1/stream/__ready__", timeout=1)
        except urllib.error.HTTPError:
            return  # any HTTP answer (404) means it serves
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


def default_database_name() -> str:
    """A name unique to this checkout, so concurrent runs of two clones do not
    drop each other's database (``make conformance`` passes ``CONFORMANCE_DB``)."""
    return f"ds_{zlib.crc32(str(ROOT).encode()):08x}_conformance"


APPS = ["example_project.asgi:application", "example_project.asgi:django_application"]


def main() -> int:
    env = dict(os.environ)
    env["DATABASE_URL"] = fresh_database_url(env.get("CONFORMANCE_DB") or default_database_name())
    env["LONG_POLL_TIMEOUT"] = env.get("CONFORMANCE_LONG_POLL_TIMEOUT", "1")
    env["DJANGO_DEBUG"] = "0"
    # The suite's webhook receiver listens on 127.0.0.1 over http.
    env["WEBHOOK_ALLOW_LOCALHOST"] = "1"
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    failed = []
    for app in sys.argv[1:] or APPS:
        print(f"=== conformance suite against {app}", flush=True)
        if run_suite(app, env) != 0:
            failed.append(app)
    if failed:
        print("conformance failures in: " + ", ".join(failed), flush=True)
    return 1 if failed else 0


def run_suite(app: str, env: dict) -> int:
    env = dict(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (ROOT / ".data").mkdir(exist_ok=True)
    log = open(ROOT / ".data" / f"conformance-{app.rsplit(':', 1)[1]}.log", "w")
    # CONFORMANCE_SERVER_CMD: another server's command line, with {python},
    # {port} and {app} filled in (make conformance-serve: the production preset).
    template = env.get("CONFORMANCE_SERVER_CMD")
    if template:
        command = shlex.split(template.format(python=PY, port=port, app=app))
    else:
        command = [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(base, server)
        env["CONFORMANCE_BASE_URL"] = base
        env["CONFORMANCE_LONG_POLL_MS"] = str(int(float(env["LONG_POLL_TIMEOUT"]) * 1000))
        return subprocess.run(["npx", "vitest", "run"], cwd=HERE, env=env).returncode
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
