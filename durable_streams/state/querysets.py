"""Bulk operations of registered models, which Django runs without model signals.

Registration swaps the model's managers to subclasses whose querysets mix in
:class:`StreamedQuerySet`, so ``bulk_create``, ``bulk_update``,
``QuerySet.update()`` and ``QuerySet.delete()`` (and the same calls through
related managers, e.g. ``room.messages.update(...)``) emit events in the same
transaction as their SQL. Raw SQL, ``_base_manager`` and ``on_delete`` field
updates (SET_NULL, SET_DEFAULT, SET(...)) bypass querysets and are not
captured; publish those with a snapshot.
"""

from __future__ import annotations

import contextlib
import operator
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from functools import reduce
from typing import Any

from django.db import models, transaction
from django.db.models import Q

from . import emission
from .registration import Registration, StateError, streaming
from .signatures import call_arguments

__all__ = ["StreamedQuerySet", "install_managers"]

# Set while a streamed bulk operation runs Django's own implementation, whose
# internal update() calls must not emit a second time.
_inside: ContextVar[bool] = ContextVar("durable_streams_state_bulk", default=False)


@contextlib.contextmanager
def _django_implementation() -> Iterator[None]:
    token = _inside.set(True)
    try:
        yield
    finally:
        _inside.reset(token)


class StreamedQuerySet(models.QuerySet):
    """A QuerySet whose bulk writes emit State Protocol events for registered models.

    Registration installs it on the model's managers; mix it into your own
    QuerySet classes explicitly if you build managers after registering.
    """

    def _streamed(self) -> list[Registration]:
        if _inside.get() or emission.is_paused():
            return []
        return streaming(self.model)

    def update(self, **kwargs: Any) -> int:
        regs = [r for r in self._streamed() if r.affected_by(kwargs)]
        if not regs:
            return super().update(**kwargs)
        if self.query.is_sliced:
            raise TypeError("Cannot update a query once a slice has been taken.")
        with transaction.atomic(using=self.db, savepoint=False):
            # Lock the matched rows first: exactly these are updated and reported,
            # and their "before" values are the ones this update replaces.
            base = self.model._base_manager.using(self.db)
            locked = (
                base.filter(pk__in=self.values("pk")).select_for_update(of=("self",)).order_by("pk")
            )
            before: dict[Any, models.Model] = {}
            if any(r.needs_before for r in regs):
                before = {obj.pk: obj for obj in locked}
                pks = list(before)
            else:
                pks = list(locked.values_list("pk", flat=True))
            count = 0
            with _django_implementation():
                for start in range(0, len(pks), emission.FETCH_CHUNK):
                    chunk = self.filter(pk__in=pks[start : start + emission.FETCH_CHUNK])
                    count += super(StreamedQuerySet, chunk).update(**kwargs)
            self._emit_updates(regs, pks, before)
        return count

    update.alters_data = True  # type: ignore[attr-defined]

    def bulk_update(self, objs, fields, batch_size=None) -> int:
        regs = self._streamed()
        if not regs:
            return super().bulk_update(objs, fields, batch_size=batch_size)
        objs = list(objs)
        with transaction.atomic(using=self.db, savepoint=False):
            pks = [obj.pk for obj in objs]
            before: dict[Any, models.Model] = {}
            if any(r.needs_before for r in regs):
                before = emission.fetch(self.model, self.db, pks, lock=True)
            with _django_implementation():
                count = super().bulk_update(objs, fields, batch_size=batch_size)
            regs = [r for r in regs if r.affected_by(fields)]
            if regs:
                # Only ``fields`` were written: read the rows back.
                self._emit_updates(regs, dict.fromkeys(pks), before)
        return count

    bulk_update.alters_data = True  # type: ignore[attr-defined]

    def _emit_updates(
        self, regs: list[Registration], pks: Iterable[Any], before: dict[Any, models.Model]
    ) -> None:
        """Read the rows ``pks`` back and emit their updates from ``before``."""
        after = emission.fetch(self.model, self.db, pks)
        stamp = emission.headers()
        changes = [
            change
            for pk, obj in after.items()
            for reg in regs
            for change in reg.update(obj, before.get(pk), stamp)
        ]
        emission.emit(changes, self.db)

    def bulk_create(self, objs, *args: Any, **kwargs: Any):
        regs = self._streamed()
        if not regs:
            return super().bulk_create(objs, *args, **kwargs)
        # Django's options by name, however the caller passed them.
        options = call_arguments(super().bulk_create, (objs, *args), kwargs)
        if options.get("ignore_conflicts"):
            raise StateError(
                f"bulk_create(ignore_conflicts=True) on streamed {self.model._meta.label}: "
                "the rows it skipped are unknown, so its events would be wrong. Run it "
                "inside state.paused() and publish with a snapshot, or use update_conflicts."
            )
        objs = list(objs)
        upsert = bool(options.get("update_conflicts"))
        unique_fields = options.get("unique_fields")
        with transaction.atomic(using=self.db, savepoint=False):
            existing: set[tuple] = set()
            if upsert and unique_fields:
                existing = self._existing(objs, unique_fields)
            with _django_implementation():
                created = super().bulk_create(objs, *args, **kwargs)
            if any(obj.pk is None for obj in created):
                raise StateError(
                    f"bulk_create on streamed {self.model._meta.label} returned no primary keys"
                )
            # Read back: database defaults, and on upserts the merged row.
            rows = emission.fetch(self.model, self.db, dict.fromkeys(obj.pk for obj in created))
            stamp = emission.headers()
            changes = []
            for obj in created:
                row = rows.get(obj.pk, obj)
                was_there = upsert and self._unique_values(obj, unique_fields) in existing
                for reg in regs:
                    if was_there:
                        changes.extend(reg.update(row, None, stamp))
                    else:
                        changes.append(reg.insert(row, stamp))
            emission.emit(changes, self.db)
        return created

    bulk_create.alters_data = True  # type: ignore[attr-defined]

    def _unique_values(self, obj: models.Model, unique_fields) -> tuple:
        if not unique_fields:
            return ()
        opts = self.model._meta
        return tuple(getattr(obj, opts.get_field(name).attname) for name in unique_fields)

    def _existing(self, objs: list[models.Model], unique_fields) -> set[tuple]:
        """Unique-field values of ``objs`` that already have rows (so an upsert
        updates them): they are reported as updates, the rest as inserts."""
        opts = self.model._meta
        attnames = [opts.get_field(name).attname for name in unique_fields]
        found: set[tuple] = set()
        for start in range(0, len(objs), emission.FETCH_CHUNK):
            chunk = objs[start : start + emission.FETCH_CHUNK]
            match = reduce(
                operator.or_,
                (Q(**{a: getattr(obj, a) for a in attnames}) for obj in chunk),
            )
            base = self.model._base_manager.using(self.db)
            found.update(base.filter(match).values_list(*attnames))
        return found

    def delete(self):
        regs = self._streamed()
        if not regs:
            return super().delete()
        with transaction.atomic(using=self.db, savepoint=False):
            if any(r.needs_before for r in regs):
                # Lock first so the rows the deletion reads (and routes by) are current.
                list(self.select_for_update(of=("self",)).order_by("pk").values_list("pk"))
            # Django sends post_delete for every row (the model has listeners);
            # collect those events and append them per stream at once.
            with emission.collecting() as changes:
                result = super().delete()
            emission.emit(changes, self.db)
        return result

    delete.alters_data = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]


def _streamed_queryset_class(base: type[models.QuerySet]) -> type[models.QuerySet]:
    if issubclass(base, StreamedQuerySet):
        return base
    name = "Streamed_" + f"{base.__module__}.{base.__qualname__}".replace(".", "_")
    module = sys.modules[__name__]
    existing = getattr(module, name, None)
    if existing is None:
        existing = type(name, (StreamedQuerySet, base), {"__module__": __name__})
        # A module-level name, so querysets of it pickle like any other.
        setattr(module, name, existing)
    return existing


_manager_classes: dict[type, type] = {}


def _patch(manager: models.Manager) -> None:
    cls = manager.__class__
    if getattr(cls, "_durable_streams_streamed", False):
        return
    streamed = _manager_classes.get(cls)
    if streamed is None:
        # Same name and module as the original, so migrations that serialise a
        # manager (use_in_migrations) still point at the user's class.
        streamed = _manager_classes[cls] = type(
            cls.__name__,
            (cls,),
            {
                "_queryset_class": _streamed_queryset_class(manager._queryset_class),
                "_durable_streams_streamed": True,
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
            },
        )
    manager.__class__ = streamed


def install_managers(model: type[models.Model]) -> None:
    """Make the managers of ``model`` (and its related managers) streamed."""
    opts = model._meta
    managers = list(opts.local_managers)
    # Copies Django already made for Model.objects and _default_manager.
    managers.extend(opts.__dict__.get("managers") or ())
    for manager in managers:
        _patch(manager)
