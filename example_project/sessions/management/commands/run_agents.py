"""``manage.py run_agents``: run the sessions' agents until stopped (SIGINT/SIGTERM)."""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand

from example_project.sessions.wakes import AgentRunner


class Command(BaseCommand):
    help = (
        "Run the Durable Sessions agents: claim the pull-wake subscription's wakes, "
        "reply with the token writer, sweep presence. Stops on SIGINT or SIGTERM."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", help="worker name in claims (default: host and pid)")

    def handle(self, *args, name=None, **options):
        asyncio.run(self._run(name))

    async def _run(self, name: str | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = AgentRunner(name)
        self.stdout.write(f"agent runner {runner.name} started", ending="\n")
        self.stdout.flush()
        await runner.run(stop)
        self.stdout.write(f"agent runner stopped after {runner.handled} replies")
