"""Hooks: registering a model connects its signal handlers and patches its methods.

A registered model's ``post_save``/``post_delete`` handlers emit its change
events (``emission``) in the transaction of the change; ``save_base`` is made
atomic so that, in autocommit mode too, the row and its events commit
together; its managers become streamed (``querysets``) so bulk operations,
which Django runs without model signals, emit too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from django.db import connections, models, router, transaction
from django.db.models import signals

from . import registration
from .emission import emit, fetch, headers, is_collecting, is_paused
from .querysets import install_managers
from .registration import Key, Stream, streaming
from .signatures import call_arguments

__all__ = ["register", "unregister"]

_BEFORE = "_durable_streams_state_before"


def register(
    model: type[models.Model] | None = None,
    /,
    *,
    stream: Stream,
    type: str | None = None,
    key: Key = "pk",
    fields: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    serializer: type | None = None,
    to_value: Callable[[models.Model], dict] | None = None,
    old_value: bool = False,
    rows_for_stream: Callable[[str], models.QuerySet] | None = None,
):
    """Stream a model's inserts, updates and deletes as State Protocol events.

    Use as a class decorator (``@state.register(stream="rooms")``) or call
    ``state.register(Model, stream=...)`` (e.g. in ``AppConfig.ready``).

    - ``stream``: a stream path, or a function of the instance returning one
      (one stream per room, per tenant...). Streams are created on demand as
      ``application/json``.
    - ``type``: the entity type (default: the model name, e.g. ``"message"``).
    - ``key``: ``"pk"``, another field's name, or a function of the instance.
    - ``fields``/``exclude``: which concrete fields make the value (default:
      all); or ``serializer`` (a DRF serializer class) or ``to_value`` (a
      function returning a dict). Values are always JSON objects.
    - ``old_value``: also send the previous value with updates and deletes
      (costs a locking read of the row before each change).
    - ``rows_for_stream``: with a per-instance ``stream``, a function from a
      stream path to the queryset of its rows (None for paths that are not
      this model's streams), so snapshots of one stream do not scan the whole
      table. Rows it returns that ``stream`` routes elsewhere are left out.

    A model may be registered more than once, e.g. into a per-room stream and
    an audit stream; each registration emits its own events.
    """

    def apply(model: type[models.Model]) -> type[models.Model]:
        registration.add(
            registration.build(
                model,
                stream=stream,
                type=type,
                key=key,
                fields=fields,
                exclude=exclude,
                serializer=serializer,
                to_value=to_value,
                old_value=old_value,
                rows_for_stream=rows_for_stream,
            )
        )
        _install(model)
        return model

    return apply if model is None else apply(model)


def unregister(model: type[models.Model]) -> None:
    """Stop streaming ``model`` (its signal handlers stay connected but idle)."""
    registration.remove(model)


# --- signal handlers ---------------------------------------------------------------------


def _has_expressions(instance: models.Model) -> bool:
    # F() expressions and database defaults: the row holds the computed value.
    return any(
        hasattr(instance.__dict__.get(f.attname), "resolve_expression")
        for f in instance._meta.concrete_fields
    )


def _pre_save(sender, instance, raw=False, using=None, update_fields=None, **kwargs) -> None:
    instance.__dict__[_BEFORE] = None
    regs = streaming(sender)
    if raw or not regs or is_paused() or instance.pk is None:
        return
    if instance._state.adding and instance._meta.pk.has_default():
        return  # a new row: Django inserts without looking for an existing one
    if any(
        r.needs_before and (update_fields is None or r.affected_by(update_fields)) for r in regs
    ):
        # Locked, so the value we report as "before" is the one this change replaces.
        instance.__dict__[_BEFORE] = fetch(sender, using, [instance.pk], lock=True).get(instance.pk)


def _post_save(sender, instance, created, raw=False, using=None, update_fields=None, **kwargs):
    before = instance.__dict__.pop(_BEFORE, None)
    regs = streaming(sender)
    if raw or not regs or is_paused():
        return  # fixture loading (raw) is published by a snapshot
    if not created and update_fields is not None:
        regs = [r for r in regs if r.affected_by(update_fields)]
        if not regs:
            return
    current = instance
    if (not created and update_fields is not None) or _has_expressions(instance):
        # Only some fields were written, or the database computed some: the
        # instance may not hold the row's values, so read the row back.
        current = fetch(sender, using, [instance.pk]).get(instance.pk, instance)
    stamp = headers()
    changes: list[tuple[str, dict]] = []
    for reg in regs:
        if created:
            changes.append(reg.insert(current, stamp))
        else:
            changes.extend(reg.update(current, before, stamp))
    emit(changes, using)


def _pre_delete(sender, instance, using=None, **kwargs) -> None:
    instance.__dict__[_BEFORE] = None
    regs = streaming(sender, inherited=False)
    if not regs or is_paused() or is_collecting():
        return  # bulk deletes lock and read their rows first
    if any(r.needs_before for r in regs) and instance.pk is not None:
        instance.__dict__[_BEFORE] = fetch(sender, using, [instance.pk], lock=True).get(instance.pk)


def _post_delete(sender, instance, using=None, **kwargs) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    regs = streaming(sender, inherited=False)
    if not regs or is_paused():
        return
    row = before if before is not None else instance
    stamp = headers()
    emit([reg.delete(row, stamp) for reg in regs], using)


def _install(model: type[models.Model]) -> None:
    """Connect the signal handlers, make saves atomic, stream bulk operations,
    for ``model`` and its subclasses (proxies, multi-table children): those
    defined already, and those defined later."""
    signals.class_prepared.connect(
        _prepared, weak=False, dispatch_uid="durable_streams.state:class_prepared"
    )
    pending = [model]
    while pending:
        klass = pending.pop()
        if not klass._meta.abstract:
            _install_one(klass)
        pending.extend(klass.__subclasses__())


def _prepared(sender, **kwargs) -> None:
    if not sender._meta.abstract and registration.has_registered_ancestor(sender):
        _install_one(sender)


def _install_one(model: type[models.Model]) -> None:
    uid = f"durable_streams.state:{model._meta.label}"
    signals.pre_save.connect(_pre_save, sender=model, weak=False, dispatch_uid=uid)
    signals.post_save.connect(_post_save, sender=model, weak=False, dispatch_uid=uid)
    signals.pre_delete.connect(_pre_delete, sender=model, weak=False, dispatch_uid=uid)
    signals.post_delete.connect(_post_delete, sender=model, weak=False, dispatch_uid=uid)
    if not getattr(model.save_base, "_durable_streams_atomic", False):
        model.save_base = _atomic_save_base(model.save_base)
    install_managers(model)


def _atomic_save_base(original: Callable) -> Callable:
    """``save_base`` that runs in a transaction when called in autocommit mode.

    Django sends ``post_save`` after the row is written, and in autocommit
    mode that write has committed by then; inside a transaction the row and
    its event commit (or roll back) together.
    """

    @functools.wraps(original)
    def save_base(self, *args, **kwargs):
        using = call_arguments(original, (self, *args), kwargs).get("using")
        using = using or router.db_for_write(self.__class__, instance=self)
        if connections[using].in_atomic_block:
            return original(self, *args, **kwargs)
        with transaction.atomic(using=using, savepoint=False):
            return original(self, *args, **kwargs)

    save_base._durable_streams_atomic = True  # type: ignore[attr-defined]
    return save_base
