"""Fixtures shared by every test: the test database and real daphne servers.

The acceptance tests talk HTTP to daphne subprocesses serving the example
project (``tests.settings``) against pytest-django's test database. They write
only through HTTP or child processes, so everything they read is committed
data, and they never use the database in-process. They carry the plain
``django_db`` marker only so that pytest-django creates the test database
when just they are selected; ``transactional_db`` would add a flush (TRUNCATE
of every table) after each of them for nothing. Every test uses streams with
unique names, so tests cannot see each other's data. Integration tests that
write in-process and read from another connection use ``transactional_db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from . import support


def _terminate_backends(settings_dict: dict, dbname: str) -> None:
    """End every other session connected to ``dbname`` so it can be dropped.

    Database threads of this process and killed servers may still hold one.
    """
    params = {
        "dbname": "postgres",
        "host": settings_dict.get("HOST") or "127.0.0.1",
        "port": settings_dict.get("PORT") or 5432,
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
    }
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(
            **{k: v for k, v in params.items() if v is not None}, autocommit=True
        ) as conn,
    ):
        conn.execute(
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = {} AND pid <> pg_backend_pid()"
            ).format(sql.Literal(dbname))
        )


def _test_db_name() -> str:
    db = settings.DATABASES["default"]
    return (db.get("TEST") or {}).get("NAME") or "test_" + db["NAME"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings):
    # A test database left behind by an interrupted run may still have
    # sessions (e.g. an orphaned server); they would block its re-creation.
    _terminate_backends(settings.DATABASES["default"], _test_db_name())


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    yield
    # Servers are stopped by now (their fixtures depend on this one); the
    # async API's database threads still hold connections: drop them.
    from django.db import connections

    connections.close_all()
    _terminate_backends(settings.DATABASES["default"], settings.DATABASES["default"]["NAME"])


@pytest.fixture(scope="session")
def test_database_url(django_db_setup) -> str:
    """``DATABASE_URL`` of the (migrated) test database, for child processes."""
    return support.database_url(settings.DATABASES["default"])


@pytest.fixture(scope="session")
def child_env(test_database_url) -> dict[str, str]:
    """Environment for a Django child process on the test database."""
    return support.child_env(test_database_url)


@pytest.fixture(scope="session")
def server_factory(
    test_database_url, tmp_path_factory
) -> Iterator[Callable[..., support.ServerProcess]]:
    """Start daphne (or ``server="uvicorn"``) servers (an ASGI app path, and
    ``DS_TEST_*`` settings in the environment); all stop at the end."""
    servers: list[support.ServerProcess] = []
    log_dir = tmp_path_factory.mktemp("daphne")

    def start(
        app: str = "example_project.asgi:application", *, server: str = "daphne", **env: str
    ) -> support.ServerProcess:
        process = support.ServerProcess(test_database_url, log_dir, app, server=server, **env)
        servers.append(process)
        return process.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def ds_server(server_factory) -> support.ServerProcess:
    """The main server: LONG_POLL_TIMEOUT 2 s, SSE_MAX_DURATION 5 s."""
    return server_factory()


@pytest.fixture(scope="session")
def server(ds_server) -> str:
    """Base URL of the main server."""
    return ds_server.url


@pytest.fixture(scope="session")
def second_server(server_factory) -> support.ServerProcess:
    """Another process on the same database, serving the streams through the
    URLconf and middleware (``django_application``), with a long long-poll
    timeout so that a reader woken late (or never) is unmistakable."""
    return server_factory("example_project.asgi:django_application", DS_TEST_LONG_POLL_TIMEOUT="15")


@pytest.fixture(scope="session")
def patient_server(server_factory) -> support.ServerProcess:
    """A server whose live reads last 120 s (long-poll and SSE): a reader that
    answers before the client's far shorter timeout was woken, or did not wait,
    and a response that ends did so for a reason other than its timer."""
    return server_factory(DS_TEST_LONG_POLL_TIMEOUT="120", DS_TEST_SSE_MAX_DURATION="120")


@pytest.fixture(scope="module")
def small_limit_server(server_factory) -> Iterator[support.ServerProcess]:
    """A server whose MAX_APPEND_SIZE is 1024 bytes (for one module's tests)."""
    server = server_factory(DS_TEST_MAX_APPEND_SIZE="1024")
    yield server
    server.stop()


@pytest.fixture
def clean_state() -> None:
    """No rows of the state test app and none of its streams (see its support module)."""
    from .stateapp.support import clear_state

    clear_state()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as client:
        yield client


@pytest.fixture
def stream_url(server) -> str:
    """URL of a fresh (not yet created) stream on the main server."""
    return f"{server}/v1/stream/{support.unique()}"


@pytest.fixture
async def pg_conn():
    """An autocommit psycopg connection of the test's own, beside the async
    API's pool (for LISTEN, pg_stat_activity, or reading what another session
    committed); the executor threads' connections are closed after it."""
    from durable_streams import storage

    conn = await psycopg.AsyncConnection.connect(**storage.connection_params(), autocommit=True)
    yield conn
    await conn.close()
    await asyncio.to_thread(support.close_executor_connections)


@pytest.fixture
async def _close_loop_pool():
    """Close the async API's pool of this test's event loop before the loop ends.

    Left open, pytest-asyncio cancels the pool's worker tasks when it closes
    the loop; a worker that is connecting then can lose the cancellation to
    the connection's own timeout and wait on its queue forever (a hung suite,
    seen once in five runs of tests/integration/test_sessions_agents.py).
    """
    yield
    from durable_streams import storage

    await storage.close_pool()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every async test closes its loop's pool (above), set up after the loop.
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.append("_close_loop_pool")
