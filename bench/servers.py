"""Starting and stopping the servers under test, and measuring their memory.

* ``ours``: the example project under an ASGI server (daphne by default;
  ``BENCH_SERVER=uvicorn|granian`` or ``--server-cmd``), on a freshly
  dropped, re-created and migrated database ``durable_streams_bench``.
* ``ref-memory`` / ``ref-file``: the Node reference server
  (``bench/reference/server.mjs``), in memory or on a data directory.

Each server runs in its own session (process group) with the open-files limit
raised, logs to ``bench/results/<key>.log`` and is stopped by its own group id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

from .httpclient import Connection, HTTPError
from .workers import raise_nofile_limit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REFERENCE = ROOT / "bench" / "reference"
# One bench at a time per database: BENCH_DB names another for a second checkout.
BENCH_DB = os.environ.get("BENCH_DB") or "durable_streams_bench"

# ASGI servers for ``BENCH_SERVER``; {python} and {port} are filled in.
# Backlogs are raised so 10,000 readers connecting in waves are not refused;
# granian's "asginl" is ASGI without lifespan (the project's router has none).
SERVER_COMMANDS: dict[str, str | None] = {
    "daphne": "{python} -m daphne -b 127.0.0.1 -p {port} example_project.asgi:application",
    "uvicorn": (
        "{python} -m uvicorn --host 127.0.0.1 --port {port} --no-access-log --lifespan off "
        "--backlog 4096 example_project.asgi:application"
    ),
    # make serve's production preset: granian, one worker per core.
    # make serve's own command, read from the Makefile (serve_command()).
    "serve": None,
    "granian": (
        "{python} -m granian --interface asginl --host 127.0.0.1 --port {port} --no-access-log "
        "--backlog 4096 --backpressure 16384 example_project.asgi:application"
    ),
}


@dataclass
class ServerSpec:
    key: str  # "ours", "ref-memory", "ref-file"
    label: str  # column title
    command: list[str]  # with "{port}" / "{data_dir}" placeholders
    env: dict[str, str] = field(default_factory=dict)
    data_dir: bool = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command() -> str:
    """The command ``make serve`` runs (the Makefile's ``SERVE_CMD``), so the
    bench measures the production preset exactly as it is shipped."""
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "serve-cmd"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def process_tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and all its children (none if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid`` and its children."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def ours_spec(server_cmd: str | None, server_name: str) -> ServerSpec:
    template = server_cmd or SERVER_COMMANDS[server_name] or serve_command()
    label = "ours" + ("" if server_cmd else f" ({server_name})")
    python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    command = shlex.split(template.replace("{python}", python))
    return ServerSpec("ours", label, command)


def reference_specs() -> list[ServerSpec]:
    node = shutil.which("node") or "node"
    script = str(REFERENCE / "server.mjs")
    return [
        ServerSpec("ref-memory", "ref (memory)", [node, script, "{port}"]),
        ServerSpec("ref-file", "ref (file)", [node, script, "{port}", "{data_dir}"], data_dir=True),
    ]


def prepare_ours_database(python: str, name: str = BENCH_DB) -> str:
    """A fresh, migrated benchmark database ``name``; returns its URL."""
    url = (
        subprocess.run(
            [python, "-m", "example_project.embedded", "url", name],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env={**os.environ, **ours_env(url)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return url


def ours_env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "PYTHONUNBUFFERED": "1",
    }


class RunningServer:
    def __init__(self, spec: ServerSpec, tag: str = "main") -> None:
        self.spec = spec
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.data_dir: str | None = None
        self.log_path = RESULTS / f"{spec.key}-{tag}.log"

    @property
    def command(self) -> list[str]:
        return [
            a.replace("{port}", str(self.port)).replace("{data_dir}", self.data_dir or "")
            for a in self.spec.command
        ]

    async def start(self, within: float = 90.0) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        if self.spec.data_dir:
            # same disk as the project (and its Postgres), so fsync costs compare
            self.data_dir = tempfile.mkdtemp(prefix="ref-data-", dir=RESULTS)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            self.command,
            cwd=ROOT,
            env={**os.environ, **self.spec.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=raise_nofile_limit,
        )
        log.close()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.key} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            conn = Connection(self.host, self.port)
            try:
                async with asyncio.timeout(5):
                    await conn.request("GET", "/v1/stream/__bench_probe__?offset=-1")
                return
            except (OSError, HTTPError, TimeoutError):
                await asyncio.sleep(0.2)
            finally:
                conn.close()
        raise RuntimeError(f"{self.spec.key} did not answer within {within:.0f}s")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def rss(self) -> int:
        """Resident memory of the server process and all its children, in bytes."""
        if self.proc is None:
            return 0
        total = 0
        for p in process_tree(self.proc.pid):
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server process and its children."""
        return 0.0 if self.proc is None else tree_cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        children: list[psutil.Process] = []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.proc.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for child in children:
            # worker processes an ASGI server forked may outlive their parent
            with contextlib.suppress(psutil.Error):
                child.kill()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
