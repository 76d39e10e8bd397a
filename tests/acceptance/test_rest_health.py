"""The health endpoint over real HTTP: a healthy process, and one whose
database is unreachable."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from ..support import ROOT, child_env, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_healthy_process_answers_200_with_both_checks(http, server):
    response = http.get(server + "/api/durable-streams/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True and body["database"]["latency_ms"] >= 0
    assert body["listener"]["ok"] is True
    assert response.headers["Cache-Control"] == "no-store"


def test_health_needs_no_credentials_and_only_answers_reads(http, server):
    assert http.post(server + "/api/durable-streams/health/").status_code == 405
    assert http.head(server + "/api/durable-streams/health/").status_code == 200


def test_a_process_without_its_database_answers_503(http, tmp_path):
    # Nothing listens on port 9 of loopback: every database connection is refused.
    port = free_port()
    log = open(tmp_path / "daphne.log", "wb")  # handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "example_project.asgi:application",
        ],
        cwd=ROOT,
        env=child_env("postgres://postgres@127.0.0.1:9/nowhere"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        response = None
        deadline = time.monotonic() + 30
        while response is None and time.monotonic() < deadline:
            try:
                response = http.get(f"http://127.0.0.1:{port}/api/durable-streams/health/")
            except httpx.TransportError:
                time.sleep(0.2)
        assert response is not None, (tmp_path / "daphne.log").read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is False and "error" in body["database"]
    assert body["listener"]["ok"] is False
