"""``manage.py streams subscriptions ...`` and ``manage.py streams deliver``.

The ``streams`` command delegates these two subcommands here.
``subscriptions`` lists, shows and deletes subscriptions and rotates the
webhook signing key; ``deliver`` runs
the subscription engine (wakes, lease expiry, webhook sends) in its own
process, beside or instead of the server processes
(``DURABLE_STREAMS["SUBSCRIPTIONS_IN_SERVER"]``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from .. import offsets
from . import engine
from .errors import SubscriptionError
from .models import Subscription


def add_subscriptions_arguments(parser: Any) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list live subscriptions")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="a subscription, its links and wake state, as JSON")
    show.add_argument("id")
    delete = sub.add_parser("delete", help="delete (tombstone) a subscription")
    delete.add_argument("id")
    sub.add_parser(
        "rotate-key",
        help="new webhook signing key; the old one stays in the JWK Set through the replay window",
    )


def _summary(sub: Subscription) -> dict:
    return {
        "id": sub.name,
        "type": sub.kind,
        "pattern": sub.pattern,
        "status": sub.status,
        "generation": sub.generation,
        "wake_id": sub.wake_id,
        "holder": sub.holder,
        "lease_expires_at": sub.lease_expires_at.isoformat() if sub.lease_expires_at else None,
        "next_attempt_at": sub.next_attempt_at.isoformat() if sub.next_attempt_at else None,
        "attempts": sub.attempts,
    }


def handle_subscriptions(command: Any, options: dict) -> None:
    action = options["action"]
    if action == "ls":
        subs = engine.subscriptions_qs().filter(deleted_at__isnull=True).order_by("name")
        for sub in subs:
            if options["json"]:
                command.stdout.write(json.dumps(_summary(sub)))
            else:
                holder = f" held by {sub.holder}" if sub.holder else ""
                command.stdout.write(
                    f"{sub.name}\t{sub.kind}\t{sub.pattern or '-'}\tgen {sub.generation}"
                    f"\t{sub.status}{holder}"
                )
        return
    if action == "rotate-key":
        from . import signing

        new_kid, deleted = signing.rotate()
        command.stdout.write(f"signing with {new_kid}")
        for kid in deleted:
            command.stdout.write(f"deleted expired key {kid}")
        return
    try:
        if action == "show":
            sub, infos = engine.describe(options["id"])
            data = _summary(sub)
            data.update(
                webhook_url=sub.webhook_url,
                wake_stream=sub.wake_stream,
                lease_ttl_ms=sub.lease_ttl_ms,
                description=sub.description,
                last_error=sub.last_error,
                streams=[
                    {
                        "path": info.path,
                        "link_type": "explicit" if info.explicit else "glob",
                        "acked_offset": offsets.encode(info.acked),
                        "tail_offset": offsets.encode(info.tail),
                        "has_pending": info.has_pending,
                    }
                    for info in infos
                ],
            )
            command.stdout.write(json.dumps(data, indent=2))
        elif action == "delete":
            if engine.find(options["id"]) is None:
                raise CommandError(f"no subscription {options['id']!r}")
            engine.delete(options["id"])
            command.stdout.write(f"deleted {options['id']}")
    except SubscriptionError as exc:
        raise CommandError(f"{exc.message} ({exc.code})") from None


def add_deliver_arguments(parser: Any) -> None:
    parser.add_argument(
        "--ready-file",
        help="touch this file once the engine listens (for supervisors and tests)",
    )


def handle_deliver(command: Any, options: dict) -> None:
    from . import runner

    async def main() -> None:
        from ..live import get_listener

        task = asyncio.ensure_future(runner.run_forever())
        await get_listener().start()
        if options.get("ready_file"):
            Path(options["ready_file"]).write_text("ready\n")  # noqa: ASYNC240 - once, tiny
        command.stdout.write("delivering subscription wakes (Ctrl-C to stop)")
        command.stdout.flush()
        await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
