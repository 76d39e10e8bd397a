"""``manage.py streams`` as a shell user runs it: a real process, stdin in,
stdout out; ``tail`` follows live appends like ``tail -f``."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import pytest

from durable_streams import api

from ..support import ROOT, unique

pytestmark = pytest.mark.django_db(transaction=True)


def manage(child_env, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "streams", *args],
        cwd=ROOT,
        env=child_env,
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_append_reads_stdin(child_env):
    path = unique()
    api.create_stream(path, content_type="text/plain")
    done = manage(child_env, "append", path, stdin=b"from a pipe\n")
    assert done.returncode == 0, done.stderr
    assert api.read(path).body == b"from a pipe\n"


def test_errors_exit_non_zero_with_a_message(child_env):
    done = manage(child_env, "head", unique("missing"))
    assert done.returncode == 1
    assert b"stream not found (404)" in done.stderr


def _lines(stream, into: queue.Queue) -> None:
    for line in iter(stream.readline, b""):
        into.put(line.decode())


def _next(lines: queue.Queue, timeout: float = 20.0) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("no output from tail") from None


def test_tail_prints_history_then_follows_live_appends_until_closed(child_env):
    path = unique()
    api.create_stream(path, content_type="application/json", data=[{"n": 1}])
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "streams", "tail", path, "--max-time", "60"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        assert _next(lines) == '{"n":1}\n'
        for n in (2, 3):
            time.sleep(0.3)  # let it wait on the notification first
            api.append(path, {"n": n})
            assert _next(lines) == f'{{"n":{n}}}\n'
        api.close(path)
        assert proc.wait(timeout=20) == 0  # a closed stream ends the tail
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_tail_stops_after_max_time_on_a_quiet_stream(child_env):
    path = unique()
    api.create_stream(path, content_type="text/plain", data="quiet\n")
    done = subprocess.run(
        [sys.executable, "manage.py", "streams", "tail", path, "--max-time", "1"],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"quiet\n"
