"""The stream URLs under WSGI servers (gunicorn, Django's runserver without
daphne): create, append, catch-up, HEAD and delete work on Django's own
connection and leak none, and live reads are refused at once with 501 and a
message naming the fix, never a hang."""

from __future__ import annotations

import httpx
import pytest

from ..support import ServerProcess, absolute_form_append_and_read, database_sessions, unique

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = {"Content-Type": "text/plain"}


class GunicornProcess(ServerProcess):
    def argv(self) -> list[str]:
        # One sync worker, one thread: a request holds the worker, as in most sites.
        return [
            "gunicorn",
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            "1",
            "--timeout",
            "60",
            "example_project.wsgi:application",
        ]


class RunserverProcess(ServerProcess):
    def argv(self) -> list[str]:
        return ["django", "runserver", "--noreload", f"127.0.0.1:{self.port}"]


SERVERS = {"gunicorn": GunicornProcess, "runserver": RunserverProcess}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def wsgi_server(request, test_database_url, tmp_path_factory):
    env = {"DS_TEST_WSGI_RUNSERVER": "1"}
    server = SERVERS[request.param](
        test_database_url, tmp_path_factory.mktemp("wsgi"), "unused", **env
    ).start()
    yield server
    server.stop()


def test_non_live_operations_work_under_wsgi_and_leak_no_connection(wsgi_server):
    url = wsgi_server.stream_url(unique("wsgi"))
    with httpx.Client(timeout=30) as http:
        assert http.put(url, headers=TEXT, content=b"a").status_code == 201
        warm = database_sessions()
        for n in range(5):
            assert http.post(url, headers=TEXT, content=b"b").status_code == 204
            read = http.get(url, params={"offset": "-1"})
            assert read.status_code == 200
            assert read.content == b"a" + b"b" * (n + 1)
            assert http.head(url).status_code == 200
            assert http.put(url, headers=TEXT).status_code == 200  # idempotent create
        after = database_sessions()
        assert http.delete(url).status_code == 204
        assert http.head(url).status_code == 404
    assert after <= warm, f"{after - warm} connections leaked over 20 requests"


@pytest.mark.parametrize("mode", ["long-poll", "sse"])
def test_live_reads_under_wsgi_are_refused_with_501_naming_the_fix(wsgi_server, mode):
    url = wsgi_server.stream_url(unique("wsgi"))
    with httpx.Client(timeout=30) as http:
        assert http.put(url, headers=TEXT, content=b"a").status_code == 201
        refused = http.get(url, params={"offset": "-1", "live": mode})
    assert refused.status_code == 501
    assert "need an ASGI server" in refused.text
    assert "daphne or uvicorn" in refused.text


def test_absolute_form_request_targets_are_served_under_wsgi(wsgi_server):
    # RFC 9112 3.2.2. runserver passes the whole URL on as PATH_INFO: the
    # example project's wsgi.py reduces it (OriginFormWSGIMiddleware).
    path = unique("absolute")
    url = wsgi_server.stream_url(path)
    with httpx.Client(timeout=30) as http:
        assert http.put(url, headers=TEXT, content=b"a").status_code == 201
        assert absolute_form_append_and_read(wsgi_server.port, path) == b"ab"
        assert http.get(url).content == b"ab"


def test_health_checks_under_wsgi_open_no_connection_per_request(wsgi_server):
    # Django runs the async health view on a loop made for each request: a
    # pool or LISTEN connection opened there would outlive it, one per check.
    url = f"{wsgi_server.url}/api/durable-streams/health/"
    with httpx.Client(timeout=30) as http:
        for _ in range(2):
            assert http.get(url).status_code == 200
        warm = database_sessions()
        for _ in range(10):
            health = http.get(url)
            assert health.status_code == 200, health.text
        after = database_sessions()
    assert health.json()["database"]["ok"] is True
    assert health.json()["listener"] == {"ok": True, "live_reads": False}
    assert after <= warm, f"{after - warm} connections opened by 10 health checks"
