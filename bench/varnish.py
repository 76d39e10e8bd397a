"""Varnish with the shipped cache configuration (deploy/varnish-cache.vcl), in
front of a server on loopback: for ``make bench``'s cache scenario and the
test that proves the collapsing (tests/acceptance/test_cache_proxies.py).

The VCL is used as shipped; only the backend address is replaced. varnishd
runs in the foreground as the current user, its working directory (``-n``)
private to this instance, so ``varnishstat -n`` reads its counters.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import daemons

ROOT = Path(__file__).resolve().parent.parent
VCL = ROOT / "deploy" / "varnish-cache.vcl"
VARNISHD = shutil.which("varnishd") or "/usr/sbin/varnishd"
VARNISHSTAT = shutil.which("varnishstat") or "/usr/bin/varnishstat"


def available() -> bool:
    return os.access(VARNISHD, os.X_OK) and os.access(VARNISHSTAT, os.X_OK)


class VarnishCache:
    """One varnishd (manager + child) serving ``VCL`` on a free port."""

    def __init__(self, origin_port: int, *, memory: str = "256m"):
        self.origin_port = origin_port
        self.memory = memory
        self.port = daemons.free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ds-varnish-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def render(self) -> str:
        vcl = VCL.read_text()
        return re.sub(r'\.port = "8000";', f'.port = "{self.origin_port}";', vcl)

    def start(self, within: float = 30.0) -> VarnishCache:
        vcl = self.dir / "durable-streams.vcl"
        vcl.write_text(self.render())
        command = [
            VARNISHD,
            "-F",
            "-j",
            "none",  # no privilege drop: the working directory stays ours
            "-a",
            f"127.0.0.1:{self.port}",
            "-f",
            str(vcl),
            "-n",
            str(self.dir / "work"),
            "-s",
            f"malloc,{self.memory}",
            "-p",
            "listen_depth=8192",
            # Counters flushed after every request, so origin_reads() is exact.
            "-p",
            "thread_stats_rate=1",
        ]
        self.proc = daemons.start(
            "varnishd",
            command,
            port=self.port,
            log_path=self.dir / "stderr.log",
            log_tail=self.log_tail,
            within=within,
        )
        return self

    def log_tail(self) -> str:
        path = self.dir / "stderr.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def counters(self, *names: str) -> dict[str, int]:
        """Values of varnishstat counters, e.g. ``MAIN.backend_req``."""
        args = [VARNISHSTAT, "-1", "-n", str(self.dir / "work")]
        for name in names:
            args += ["-f", name]
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=True)
        values = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                values[parts[0]] = int(parts[1])
        return values

    def origin_reads(self) -> int:
        """Requests varnishd sent to the origin (reads only, when nothing else passes)."""
        return self.counters("MAIN.backend_req").get("MAIN.backend_req", 0)

    def stop(self) -> None:
        daemons.stop(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
