"""Helper programs run beside the server for one bench or test (the caches in
front of it): started in a process group of their own, awaited until they
listen, and stopped with every worker they forked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    name: str,
    command: list[str],
    *,
    port: int,
    log_path: Path,
    log_tail: Callable[[], str],
    within: float,
) -> subprocess.Popen:
    """Run ``command`` (its output to ``log_path``) until it accepts connections
    on ``port``, for ``within`` seconds at most; raise with ``log_tail()`` if
    it exits or never listens."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{name} did not listen within {within:.0f}s: {log_tail()}")


def stop(proc: subprocess.Popen | None) -> None:
    """End ``proc``'s process group: SIGTERM, then SIGKILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
