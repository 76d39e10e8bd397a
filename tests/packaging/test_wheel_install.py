"""The released package, as a new user gets it (issue 11, items 2, 9 and 10).

``python -m build`` makes an sdist and, from it, a wheel; ``twine check``
passes; the wheel installs into a fresh virtualenv next to a project made with
``django-admin startproject``, set up with exactly the snippets of
docs/installation.md (the code blocks after a ``packaging-check`` comment).
Under daphne and under uvicorn that site creates, appends and reads streams
(live too), and its admin renders the stream pages from the package's
templates, with its static files (WhiteNoise, as the page says).

Slow (a build, a virtualenv, a pip install): ``make package-check`` runs it,
and ``make test`` runs that; plain ``pytest`` deselects it (marker ``packaging``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from ..support import ROOT, free_port

pytestmark = pytest.mark.packaging

INSTALLATION = ROOT / "docs" / "installation.md"
PASSWORD = "pkg-admin-pw"


def run(*args: str | Path, cwd: Path | None = None, env: dict | None = None, timeout=600) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel built from it, as ``python -m build`` makes them."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"{pattern}: {found}"
    return found[0]


def test_twine_check_passes_on_the_wheel_and_the_sdist(dist):
    files = [_one(dist, "*.whl"), _one(dist, "*.tar.gz")]
    out = run(sys.executable, "-m", "twine", "check", "--strict", *files)
    assert out.count("PASSED") == 2, out


def test_the_wheel_carries_templates_migrations_schema_types_and_license(dist):
    names = set(zipfile.ZipFile(_one(dist, "*.whl")).namelist())
    for needed in (
        "durable_streams/templates/admin/durable_streams/stream/detail.html",
        "durable_streams/templates/admin/durable_streams/stream/change_list.html",
        "durable_streams/migrations/0001_initial.py",
        "durable_streams/state/schema.json",
        "durable_streams/py.typed",
    ):
        assert needed in names, needed
    assert any(re.search(r"\.dist-info/licenses/LICENSE$", name) for name in names)
    # Only the app: no tests, example project or benchmark in the wheel.
    assert {name.split("/")[0] for name in names if "/" in name} <= {
        "durable_streams",
        *(name.split("/")[0] for name in names if ".dist-info/" in name),
    }


def test_the_sdist_carries_the_app_docs_changelog_and_license(dist):
    with tarfile.open(_one(dist, "*.tar.gz")) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in (
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "durable_streams/templates/admin/durable_streams/stream/detail.html",
        "durable_streams/state/schema.json",
        "durable_streams/py.typed",
    ):
        assert needed in names, needed


def _snippets(path: str) -> list[str]:
    """The code blocks of docs/installation.md marked for ``path``."""
    text = INSTALLATION.read_text()
    pattern = rf"<!-- packaging-check: {re.escape(path)} -->\s*```python\n(.*?)```"
    return re.findall(pattern, text, flags=re.S)


@contextlib.contextmanager
def _database() -> Iterator[dict]:
    """A new, empty database on the test suite's PostgreSQL server."""
    db = settings.DATABASES["default"]
    params = {
        "host": db.get("HOST") or "127.0.0.1",
        "port": str(db.get("PORT") or 5432),
        "user": db.get("USER") or "postgres",
        "password": db.get("PASSWORD") or "",
    }
    name = f"{db['NAME']}_pkg"
    connect = {k: v for k, v in params.items() if v} | {"dbname": "postgres"}

    def drop():
        with psycopg.connect(**connect, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [name],
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    drop()
    with psycopg.connect(**connect, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield params | {"name": name}
    finally:
        drop()


@pytest.fixture(scope="module")
def site(dist, tmp_path_factory) -> Iterator[dict]:
    """A startproject site in a fresh virtualenv with the wheel, per the docs."""
    home = tmp_path_factory.mktemp("site")
    # Nothing of this test run leaks into the new site's processes.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV")
    }
    venv = home / "venv"
    run(sys.executable, "-m", "venv", venv, env=env)
    bin_ = venv / "bin"
    # The wheel, and what docs/installation.md has a user install beside it.
    run(bin_ / "pip", "install", "-q", _one(dist, "*.whl"), "uvicorn", "whitenoise", env=env)
    project = home / "mysite"
    project.mkdir()
    run(bin_ / "django-admin", "startproject", "mysite", project, env=env)
    for relative in ("mysite/settings.py", "mysite/urls.py"):
        blocks = _snippets(relative)
        assert blocks, f"docs/installation.md has no packaging-check block for {relative}"
        with (project / relative).open("a") as f:
            f.write("\n\n# From docs/installation.md\n" + "\n".join(blocks))
    with (project / "mysite/settings.py").open("a") as f:
        # The one line that is not in the docs: this test's own database.
        f.write(
            "\n# The test's database\nimport os\n"
            "DATABASES['default'].update({k: os.environ['PKG_DB_' + k] "
            "for k in ('NAME', 'HOST', 'PORT', 'USER', 'PASSWORD')})\n"
        )
    with _database() as db:
        env.update({f"PKG_DB_{k.upper()}": v for k, v in db.items()})
        env.update(DJANGO_SUPERUSER_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
        python = bin_ / "python"
        where = run(
            python,
            "-c",
            "import durable_streams; print(durable_streams.__file__)",
            cwd=project,
            env=env,
        )
        assert where.strip().startswith(str(venv)), where
        run(python, "manage.py", "check", "--fail-level", "ERROR", cwd=project, env=env)
        run(python, "manage.py", "migrate", "--noinput", cwd=project, env=env)
        run(
            python, "manage.py", "createsuperuser", "--noinput",
            "--username", "admin", "--email", "admin@example.com", cwd=project, env=env,
        )  # fmt: skip
        run(python, "manage.py", "collectstatic", "--noinput", cwd=project, env=env)
        yield {"bin": bin_, "project": project, "env": env}


SERVERS = {
    "daphne": ["daphne", "-b", "127.0.0.1", "-p", "{port}", "mysite.asgi:application"],
    "uvicorn": ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "mysite.asgi:application"],
}


@contextlib.contextmanager
def _serving(site: dict, server: str) -> Iterator[str]:
    port = free_port()
    args = [str(site["bin"] / SERVERS[server][0])]
    args += [a.format(port=port) for a in SERVERS[server][1:]]
    log = (site["project"] / f"{server}.log").open("w")
    process = subprocess.Popen(
        args, cwd=site["project"], env=site["env"], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (site["project"] / f"{server}.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/admin/login/", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_the_installed_wheel_serves_a_startproject_site(site, server):
    with _serving(site, server) as base, httpx.Client(base_url=base, timeout=30) as client:
        stream = f"/v1/stream/first-hour/{server}"
        # Create, append, read.
        created = client.put(stream, headers={"Content-Type": "application/json"})
        assert created.status_code == 201, created.text
        assert client.post(stream, json={"text": "hi"}).status_code == 204
        read = client.get(stream, params={"offset": "-1"})
        assert read.status_code == 200 and read.json() == [{"text": "hi"}]
        tail = read.headers["Stream-Next-Offset"]

        # A live (long-poll) read is woken by the next append.
        woken: dict = {}

        def wait():
            with httpx.Client(base_url=base, timeout=30) as reader:
                woken["response"] = reader.get(stream, params={"offset": tail, "live": "long-poll"})

        reader = threading.Thread(target=wait)
        reader.start()
        time.sleep(1)
        assert client.post(stream, json={"text": "later"}).status_code == 204
        reader.join(timeout=30)
        assert woken["response"].status_code == 200
        assert woken["response"].json() == [{"text": "later"}]

        # The admin: sign in, the stream list and the stream page render from the
        # package's templates, with their static files.
        login = client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        signed_in = client.post(
            "/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": "admin", "password": PASSWORD},
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        listing = client.get("/admin/durable_streams/stream/")
        assert listing.status_code == 200
        assert 'id="result_list"' in listing.text and f"first-hour/{server}" in listing.text
        assert "Create stream" in listing.text  # durable_streams' change_list.html
        page_url = re.search(r'href="(/admin/durable_streams/stream/\d+/change/)"', listing.text)
        page = client.get(page_url.group(1))
        assert page.status_code == 200
        assert 'id="ds-live-events"' in page.text and "Live tail" in page.text  # detail.html
        for css in re.findall(r'href="(/static/admin/css/[^"]+\.css)"', page.text):
            style = client.get(css)
            assert style.status_code == 200, css
            assert style.headers["Content-Type"].startswith("text/css"), css
        assert "/static/admin/css/base.css" in page.text
