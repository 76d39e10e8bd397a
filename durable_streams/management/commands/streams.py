"""``manage.py streams SUBCOMMAND``: operate durable streams from a shell or cron.

Each subcommand is a ``subcommands`` entry plus two methods,
``add_<name>_arguments(parser)`` and ``handle_<name>(options)``. Operations
go through the same storage as the HTTP views (and wake the same live
readers); the access policy does not apply: whoever runs ``manage.py`` is
trusted.
"""

from __future__ import annotations

import asyncio
import codecs
import datetime as dt
import json
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.models import Count

from durable_streams import api, catalog, content, headers, live, offsets, storage
from durable_streams.conf import ds_settings
from durable_streams.exceptions import BadRequest, StreamError
from durable_streams.models import Stream


def _position(token: str) -> int | None:
    """A position from ``-1``, ``now`` (None: the tail) or an offset token."""
    try:
        return offsets.parse(token)
    except offsets.InvalidOffset:
        raise CommandError(f"malformed offset {token!r} (use -1, now or a token)") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _expires_at(value: str | None) -> dt.datetime | None:
    """``--expires-at`` by the protocol's own ``Stream-Expires-At`` rule."""
    try:
        return headers.parse_expires_at(value)
    except BadRequest:
        raise CommandError(
            f"--expires-at must be an RFC 3339 timestamp with a time zone"
            f" (e.g. 2030-01-01T00:00:00Z), not {value!r}"
        ) from None


class Command(BaseCommand):
    help = "Inspect and operate durable streams (run a subcommand with -h for its options)."

    # (name, help). A subcommand defined elsewhere appends itself here and adds
    # its add_<name>_arguments / handle_<name> methods; `snapshot` (model change
    # streams) goes after `stats`.
    subcommands = [
        ("ls", "list streams"),
        ("create", "create a stream"),
        ("append", "append stdin or a file to a stream"),
        ("tail", "print a stream from an offset, then follow it like tail -f"),
        ("head", "show a stream's metadata"),
        ("close", "close a stream"),
        ("delete", "delete a stream and its data"),
        ("fork", "fork a stream at an offset"),
        ("expire", "remove expired streams and their data, in batches"),
        ("stats", "counts and sizes of the stream tables"),
        ("snapshot", "write State Protocol snapshots of model change streams"),
        ("subscriptions", "list, show or delete subscriptions; rotate the webhook signing key"),
        ("deliver", "run the subscription engine: wakes, lease expiry, webhook sends"),
    ]

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        for name, help_text in self.subcommands:
            subparser = sub.add_parser(name, help=help_text, description=help_text)
            getattr(self, f"add_{name}_arguments")(subparser)

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, f"handle_{options['subcommand']}")
        try:
            handler(options)
        except StreamError as exc:
            raise CommandError(f"{exc.message} ({exc.status})") from None

    def _write_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, default=_json_default, indent=2))

    def _input(self, options: dict) -> bytes | None:
        """The bytes of ``--data``, ``--file`` (``-``: stdin), or None for neither."""
        if options.get("data") is not None:
            return options["data"].encode()
        name = options.get("file")
        if name is None:
            return None
        if name == "-":
            return sys.stdin.buffer.read()
        try:
            with open(name, "rb") as f:
                return f.read()
        except OSError as exc:
            raise CommandError(f"cannot read {name}: {exc.strerror}") from None

    # --- ls ------------------------------------------------------------------------------

    def add_ls_arguments(self, parser) -> None:
        parser.add_argument("prefix", nargs="?", default="", help="only paths starting with this")
        parser.add_argument("--state", choices=[s for s, _ in catalog.STATES])
        parser.add_argument("--kind", choices=[k for k, _ in catalog.KINDS])
        parser.add_argument("--limit", type=int, default=100, help="at most this many (100)")
        parser.add_argument("--json", action="store_true", help="print one JSON array")

    def handle_ls(self, options: dict) -> None:
        rows = catalog.streams().filter(path__startswith=options["prefix"])
        if options["state"]:
            rows = rows.filter(catalog.state_q(options["state"]))
        if options["kind"]:
            rows = rows.filter(catalog.kind_q(options["kind"]))
        described = [catalog.describe(stream) for stream in rows[: max(options["limit"], 0)]]
        if options["json"]:
            self._write_json(described)
            return
        for d in described:
            size = f"{d['message_count']} msgs" if d["kind"] == "json" else f"{d['size_bytes']} B"
            expires = d["expires_at"].isoformat() if d["expires_at"] else "never"
            self.stdout.write(
                f"{d['path']}  {d['content_type']}  {d['state']}  {d['tail_offset']}"
                f"  {size}  expires={expires}"
            )

    # --- create ----------------------------------------------------------------------------

    def add_create_arguments(self, parser) -> None:
        parser.add_argument("path")
        parser.add_argument("--content-type", default=content.DEFAULT_CONTENT_TYPE)
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument("--ttl", type=int, help="sliding time to live, in seconds")
        expiry.add_argument("--expires-at", help="absolute expiry (RFC 3339, with time zone)")
        parser.add_argument("--closed", action="store_true", help="create it closed")
        body = parser.add_mutually_exclusive_group()
        body.add_argument("--data", help="initial content")
        body.add_argument("--file", help="initial content from a file ('-': stdin)")

    def handle_create(self, options: dict) -> None:
        if not content.valid_content_type(options["content_type"]):
            raise CommandError(f"invalid content type {options['content_type']!r}")
        if options["ttl"] is not None and options["ttl"] < 0:
            raise CommandError("--ttl must not be negative")
        meta = api.create_stream(
            options["path"],
            content_type=options["content_type"],
            ttl_seconds=options["ttl"],
            expires_at=_expires_at(options["expires_at"]),
            closed=options["closed"],
            data=self._input(options),
        )
        self.stdout.write(f"{meta.path} {meta.tail_offset}")

    # --- append ----------------------------------------------------------------------------

    def add_append_arguments(self, parser) -> None:
        parser.add_argument("path")
        parser.add_argument("--file", default="-", help="what to append ('-', the default: stdin)")
        parser.add_argument(
            "--lines",
            action="store_true",
            help="append each non-empty line on its own (one JSON message per line)",
        )
        parser.add_argument("--close", action="store_true", help="close the stream after it")

    def handle_append(self, options: dict) -> None:
        data = self._input(options) or b""
        path = options["path"]
        if options["lines"]:
            chunks = [line for line in data.splitlines() if line.strip()]
        else:
            chunks = [data] if data else []
        if not chunks and not options["close"]:
            raise CommandError("nothing to append (empty input)")
        content_type = storage.require_stream(path).content_type
        result = None
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            result = api.append(
                path, chunk, content_type=content_type, close=options["close"] and last
            )
        if result is None:
            result = api.close(path)
        self.stdout.write(result.next_offset)

    # --- tail ------------------------------------------------------------------------------

    def add_tail_arguments(self, parser) -> None:
        parser.add_argument("path")
        parser.add_argument("--offset", default="-1", help="start here: -1 (default), now, a token")
        parser.add_argument(
            "--no-follow", action="store_true", help="stop at the tail instead of following"
        )
        parser.add_argument("--max-time", type=float, help="stop following after this many seconds")

    def handle_tail(self, options: dict) -> None:
        path = options["path"]
        position = _position(options["offset"])
        if options["no_follow"]:
            printer = None
            while True:
                result = storage.read(path, position)
                printer = printer or _Printer(self, result.stream.content_type)
                printer.write(result)
                position = result.next_position
                if result.up_to_date:
                    return
        try:
            asyncio.run(self._follow(path, position, options["max_time"]))
        except KeyboardInterrupt:
            pass

    async def _follow(self, path: str, position: int | None, max_time: float | None) -> None:
        until = None if max_time is None else time.monotonic() + max_time
        printer = None
        try:
            async with live.Follow(path, position, until=until) as reads:
                async for result in reads:
                    printer = printer or _Printer(self, result.stream.content_type)
                    printer.write(result)
        finally:
            await live.get_listener().stop()
            await storage.close_pool()

    # --- head ------------------------------------------------------------------------------

    def add_head_arguments(self, parser) -> None:
        parser.add_argument("path")
        parser.add_argument("--json", action="store_true", help="print a JSON object")

    def handle_head(self, options: dict) -> None:
        storage.require_stream(options["path"])  # 404/410 as the protocol answers
        stream = catalog.streams().get(path=options["path"])
        described = catalog.describe(stream)
        described["producers"] = [
            {"producer_id": p.producer_id, "epoch": p.epoch, "last_seq": p.last_seq}
            for p in catalog.producers(stream)
        ]
        described["forks"] = [fork.path for fork in catalog.forks(stream)]
        if options["json"]:
            self._write_json(described)
            return
        for key, value in described.items():
            if isinstance(value, dt.datetime):
                value = value.isoformat()
            self.stdout.write(f"{key}: {'' if value is None else value}")

    # --- close, delete -----------------------------------------------------------------

    def add_close_arguments(self, parser) -> None:
        parser.add_argument("path")

    def handle_close(self, options: dict) -> None:
        self.stdout.write(api.close(options["path"]).next_offset)

    def add_delete_arguments(self, parser) -> None:
        parser.add_argument("path")

    def handle_delete(self, options: dict) -> None:
        api.delete(options["path"])
        self.stdout.write(f"deleted {options['path']}")

    # --- fork --------------------------------------------------------------------------

    def add_fork_arguments(self, parser) -> None:
        parser.add_argument("path", help="the new stream")
        parser.add_argument("source", help="the stream to fork")
        parser.add_argument("--offset", help="fork point (default: the source's tail)")
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument("--ttl", type=int, help="sliding time to live, in seconds")
        expiry.add_argument("--expires-at", help="absolute expiry (RFC 3339, with time zone)")

    def handle_fork(self, options: dict) -> None:
        position = None
        if options["offset"] is not None:
            position = _position(options["offset"])
            if position is None:
                raise CommandError("--offset must be -1 or an offset token")
        _, meta = storage.create_stream(
            options["path"],
            content_type=None,
            ttl_seconds=options["ttl"],
            expires_at=_expires_at(options["expires_at"]),
            fork=storage.ForkSpec(options["source"], position),
        )
        self.stdout.write(f"{meta.path} {meta.tail_offset}")

    # --- expire --------------------------------------------------------------------------

    def add_expire_arguments(self, parser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=500, help="streams per transaction (500)"
        )
        parser.add_argument("--max-batches", type=int, help="stop after this many batches")
        parser.add_argument(
            "--dry-run", action="store_true", help="count expired streams, remove nothing"
        )

    def handle_expire(self, options: dict) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if options["dry_run"]:
            count = catalog.streams().filter(catalog.state_q("expired")).count()
            self.stdout.write(f"{count} expired streams")
            return
        removed = storage.expire(
            batch_size=options["batch_size"], max_batches=options["max_batches"]
        )
        self.stdout.write(f"removed {removed} expired streams")

    # --- stats ---------------------------------------------------------------------------

    def add_stats_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="print a JSON object")

    def handle_stats(self, options: dict) -> None:
        # One pass over the stream rows (never over the appends).
        counts = Stream.objects.annotate(deadline=catalog.deadline_expression()).aggregate(
            **{state: Count("pk", filter=catalog.state_q(state)) for state, _ in catalog.STATES}
        )
        stats: dict[str, Any] = {"streams": Stream.objects.count(), **counts}
        with connections[ds_settings.DATABASE_ALIAS].cursor() as cursor:
            for label, model in (("appends", "segment"), ("producers", "producer")):
                table = f"durable_streams_{model}"
                # Planner estimates: exact counts would scan every append.
                cursor.execute(
                    "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class"
                    " WHERE oid = %s::regclass",
                    [table],
                )
                estimate, size = cursor.fetchone()
                stats[f"{label}_estimate"] = max(estimate, 0)
                stats[f"{label}_table_bytes"] = size
            cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [Stream._meta.db_table])
            stats["streams_table_bytes"] = cursor.fetchone()[0]
        if options["json"]:
            self._write_json(stats)
            return
        for key, value in stats.items():
            self.stdout.write(f"{key}: {value}")

    # --- snapshot (model change streams: durable_streams.state) --------------------------

    def add_snapshot_arguments(self, parser) -> None:
        from durable_streams.state.command import add_snapshot_arguments

        add_snapshot_arguments(parser)

    def handle_snapshot(self, options: dict) -> None:
        from durable_streams.state.command import handle_snapshot

        handle_snapshot(self, options)

    # --- subscriptions, deliver (durable_streams.subscriptions) ---------------------------

    def add_subscriptions_arguments(self, parser) -> None:
        from durable_streams.subscriptions.command import add_subscriptions_arguments

        add_subscriptions_arguments(parser)

    def handle_subscriptions(self, options: dict) -> None:
        from durable_streams.subscriptions.command import handle_subscriptions

        handle_subscriptions(self, options)

    def add_deliver_arguments(self, parser) -> None:
        from durable_streams.subscriptions.command import add_deliver_arguments

        add_deliver_arguments(parser)

    def handle_deliver(self, options: dict) -> None:
        from durable_streams.subscriptions.command import handle_deliver

        handle_deliver(self, options)


class _Printer:
    """Writes read results the way a terminal wants each kind of stream:
    JSON one message per line, text as is, binary as raw bytes."""

    def __init__(self, command: BaseCommand, content_type: str) -> None:
        self.out = command.stdout
        self.json = content.is_json(content_type)
        self.text = content.is_text(content_type)
        # Chunks may end inside a UTF-8 sequence.
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, result: storage.ReadResult) -> None:
        if not result.units:
            return
        if self.json:
            for message in json.loads(result.body):
                self.out.write(json.dumps(message, separators=(",", ":")))
        elif self.text:
            self.out.write(self.decoder.decode(result.body), ending="")
        else:
            buffer = getattr(getattr(self.out, "_out", None), "buffer", None)
            if buffer is not None:
                buffer.write(result.body)
            else:
                self.out.write(result.body.hex(), ending="")
        self.out.flush()
