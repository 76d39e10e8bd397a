"""``make run`` leaves no PostgreSQL behind: ``example_project.embedded serve``
starts the embedded server for its command and stops it when the command ends
or the runner is interrupted, and leaves alone a server that was already up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from example_project.embedded import (
    embedded_postgres_status,
    ensure_embedded_postgres,
    stop_embedded_postgres,
)

from ..support import ROOT, free_port, unique

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def data_dir(monkeypatch):
    # Under the project's .data/, which the embedded server's system user can reach
    # (pytest's tmp dirs are private to root).
    monkeypatch.setenv("EMBEDDED_PG_PORT", str(free_port()))
    path = ROOT / ".data" / unique("pg-serve-test")
    yield path
    stop_embedded_postgres(path)
    shutil.rmtree(path, ignore_errors=True)
    (path.parent / f".{path.name}.lock").unlink(missing_ok=True)


def serve(data_dir, command) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "example_project.embedded", "serve", str(data_dir), "--", *command],
        cwd=ROOT,
        env=env,
        start_new_session=True,  # a Ctrl-C reaches the runner and its command, as in a terminal
        # A suite started in the background of a non-interactive shell inherits
        # SIGINT ignored, and Python then never raises KeyboardInterrupt: give
        # the runner a terminal's default, as `make run` has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def sleeper_started(runner: subprocess.Popen) -> bool:
    """Whether the runner has started its command (the sleeper)."""
    try:
        children = psutil.Process(runner.pid).children()
        return any(SLEEPER[-1] in " ".join(child.cmdline()) for child in children)
    except psutil.Error:  # the runner or a child ended meanwhile
        return False


def wait_for(predicate, what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_embedded_server_stops_when_the_served_command_is_stopped(data_dir, stop):
    runner = serve(data_dir, SLEEPER)
    try:
        wait_for(lambda: embedded_postgres_status(data_dir) is not None, "the server to start")
        # The server answers before the runner has started its command (it still
        # creates the database): a Ctrl-C in between would stop a half-started
        # server, which is not the case this test is about.
        wait_for(lambda: sleeper_started(runner), "the command to start")
        # Ctrl-C goes to the whole foreground process group; SIGTERM to the runner only.
        if stop == signal.SIGINT:
            os.killpg(runner.pid, signal.SIGINT)
        else:
            runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert embedded_postgres_status(data_dir) is None


def test_a_server_that_was_already_running_is_left_running(data_dir):
    ensure_embedded_postgres(data_dir)
    runner = serve(data_dir, [sys.executable, "-c", "pass"])
    assert runner.wait(timeout=120) == 0
    assert embedded_postgres_status(data_dir) is not None
