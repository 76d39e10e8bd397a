"""nginx with the shipped cache configuration (deploy/nginx-cache.conf), in
front of a server on loopback: for ``make bench``'s cache scenario and the
test that proves the collapsing (tests/acceptance/test_cache_proxies.py).

The configuration file is used as shipped; only the values a deployment
adapts (origin address, listen port, cache path) are replaced, plus a
private pid file, temp paths and an access log that records, per request,
whether nginx asked the origin (``$upstream_addr`` is set only then).
"""

from __future__ import annotations

import os
import pwd
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import daemons

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "nginx-cache.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def available() -> bool:
    return os.access(NGINX, os.X_OK)


class NginxCache:
    """One nginx process (master + ``workers``) serving ``CONFIG`` on a free port."""

    def __init__(self, origin_port: int, *, workers: int = 1, lock_timeout: float | None = None):
        self.origin_port = origin_port
        self.workers = workers
        self.lock_timeout = lock_timeout
        self.port = daemons.free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ds-nginx-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def render(self) -> str:
        site = CONFIG.read_text()
        site = site.replace("/var/cache/nginx/durable-streams", str(self.dir / "cache"))
        site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{self.origin_port};")
        site = re.sub(r"listen 8080;", f"listen 127.0.0.1:{self.port} backlog=8192;", site)
        if self.lock_timeout is not None:
            site = re.sub(
                r"proxy_cache_lock_(timeout|age) \S+;",
                rf"proxy_cache_lock_\1 {self.lock_timeout:g}s;",
                site,
            )
        d = self.dir
        # As root, workers would switch to "nobody" and lose the private
        # cache directory; anyone else runs them as themselves anyway.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
        return f"""
{user}
worker_processes {self.workers};
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections {max(1024, nofile // 2)}; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format ds '$request_method $request_uri $status "$upstream_cache_status" "$upstream_addr"';
    access_log {d}/access.log ds;
{site}
}}
"""

    def start(self, within: float = 15.0) -> NginxCache:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.render())
        self.proc = daemons.start(
            "nginx",
            [NGINX, "-p", str(self.dir), "-c", str(conf)],
            port=self.port,
            log_path=self.dir / "stderr.log",
            log_tail=self.log_tail,
            within=within,
        )
        return self

    def log_tail(self) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            path = self.dir / name
            if path.exists():
                out.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(out)

    def entries(self) -> list[tuple[str, str, int, str, bool]]:
        """(method, uri, status, cache status, went to the origin) per logged request.

        nginx writes an entry when a request ends, so ask after the requests ended.
        """
        rows = []
        if not self.access_log.exists():
            return rows
        pattern = re.compile(r'^(\S+) (\S+) (\d+) "([^"]*)" "([^"]*)"$')
        for line in self.access_log.read_text(errors="replace").splitlines():
            m = pattern.match(line)
            if m:
                method, uri, status, cache, upstream = m.groups()
                rows.append((method, uri, int(status), cache, upstream not in ("", "-")))
        return rows

    def origin_reads(self) -> int:
        """GET requests nginx passed to the origin."""
        return sum(1 for m, _, _, _, origin in self.entries() if m == "GET" and origin)

    def stop(self) -> None:
        daemons.stop(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
