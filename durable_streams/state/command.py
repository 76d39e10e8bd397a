"""``manage.py streams snapshot``: publish the current rows of streamed models.

The ``streams`` command delegates its ``snapshot`` subcommand here.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from . import snapshots
from .registration import StateError, registrations


def add_snapshot_arguments(parser: Any) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="streams to snapshot (default: every stream of the selected models)",
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="APP_LABEL.MODEL",
        help="only this registered model (repeatable; default: every registered model)",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="append a reset first: clients drop their state and reload it from the snapshot",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the streams it would write, write nothing"
    )


def _models(labels: list[str] | None) -> list | None:
    if not labels:
        return None
    chosen = []
    for label in labels:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            raise CommandError(f"unknown model {label!r} (use app_label.ModelName)") from None
        if not registrations(model):
            raise CommandError(f"{model._meta.label} is not registered for streaming")
        chosen.append(model)
    return chosen


def handle_snapshot(command: BaseCommand, options: dict) -> None:
    models = _models(options["models"])
    if not registrations() and models is None:
        raise CommandError("no model is registered for streaming (durable_streams.state.register)")
    paths = options["paths"] or snapshots.stream_paths(models)
    if options["dry_run"]:
        for path in paths:
            command.stdout.write(path)
        return
    for path in paths:
        try:
            result = snapshots.snapshot(path, models=models, reset=options["reset"])
        except StateError as exc:
            raise CommandError(str(exc)) from None
        note = " after a reset" if result.reset else ""
        command.stdout.write(f"{result.stream}: {result.rows} rows{note}")
