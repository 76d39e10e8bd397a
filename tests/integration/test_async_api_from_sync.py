"""The async API called from sync code (``async_to_sync`` in plain threads, as a
WSGI site or a worker does): each call runs on a loop made for it alone, so
the operations run on the calling thread's Django connection, as the sync API
does, and repeated calls open no pool (no connection) per loop."""

from __future__ import annotations

import threading

import psutil
import pytest
from asgiref.sync import async_to_sync
from django.db import connections

from durable_streams import api
from durable_streams.exceptions import NotFound

from ..support import database_sessions, unique

pytestmark = pytest.mark.django_db(transaction=True)


def other_connections() -> int:
    """This process's connections to the test database, other than this thread's
    own. Servers that other tests run connect to the same database; their
    connections come and go, so only the ones whose client port is a socket of
    this process count."""
    ports = [c.laddr.port for c in psutil.Process().net_connections("tcp") if c.laddr]
    return database_sessions(client_ports=ports)


def calls(path: str, rounds: int, failures: list) -> None:
    try:
        for _ in range(rounds):
            async_to_sync(api.aappend)(path, b"b")
            assert async_to_sync(api.ahead)(path).content_type == "text/plain"
            assert async_to_sync(api.aread)(path).body.startswith(b"ab")
    except Exception as exc:  # reported by the test's thread
        failures.append(exc)
    finally:
        connections.close_all()  # as Django does at the end of a request


def run_in_threads(path: str, threads: int, rounds: int) -> None:
    failures: list = []
    workers = [
        threading.Thread(target=calls, args=(path, rounds, failures), daemon=True)
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    # Before the fix each call hung in asyncio.run's shutdown (the pool of its loop).
    assert not any(worker.is_alive() for worker in workers), "a call hangs"
    assert not failures, failures


def test_async_api_from_sync_threads_opens_no_pool_per_call():
    path = unique("from-sync")
    api.create_stream(path, content_type="text/plain", data=b"a")
    run_in_threads(path, threads=2, rounds=2)  # warm: whatever stays open per process
    warm = other_connections()
    run_in_threads(path, threads=2, rounds=10)
    after = other_connections()
    assert api.read(path).body == b"a" + b"b" * 24
    assert after <= warm, f"{after - warm} connections left by 60 async API calls"


def test_async_api_from_sync_code_works_on_the_callers_connection():
    path = unique("from-sync")
    async_to_sync(api.acreate_stream)(path, content_type="text/plain", data="a")
    async_to_sync(api.aappend)(path, "b")
    assert api.read(path).body == b"ab"
    assert async_to_sync(api.aread)(path).body == b"ab"
    async_to_sync(api.adelete)(path)
    with pytest.raises(NotFound):
        api.head(path)
