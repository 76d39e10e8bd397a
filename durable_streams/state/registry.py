"""Registering models for streaming, and emitting their changes in the caller's transaction.

A registered model's ``post_save``/``post_delete`` handlers append State
Protocol events with the in-process storage API, which runs on the caller's
database connection. So an event is part of the transaction that changed the
row: a rollback (or a savepoint rollback) drops exactly the events written
inside it, a commit makes them visible and wakes live readers (Postgres
``NOTIFY`` is transactional), and the stream row lock that every append takes
serialises the writers of one stream, so offset order is commit order.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connections, models, router, transaction
from django.db.models import signals

from .. import api
from ..conf import ds_settings
from ..content import JSON
from ..exceptions import NotFound
from . import events
from .txid import current_txid
from .values import field_value, jsonable

__all__ = [
    "Registration",
    "StateError",
    "append_events",
    "paused",
    "register",
    "registrations",
    "unregister",
]

# Events per append: bounds the size of one stored segment for bulk operations.
APPEND_CHUNK = 1000
# Primary keys per query when bulk operations read rows back.
FETCH_CHUNK = 2000

_BEFORE = "_durable_streams_state_before"

_registry: dict[type[models.Model], list[Registration]] = {}
# While set, change events are collected here instead of appended (bulk deletes).
_buffer: ContextVar[list[tuple[str, dict]] | None] = ContextVar(
    "durable_streams_state_buffer", default=None
)
_paused: ContextVar[bool] = ContextVar("durable_streams_state_paused", default=False)

Stream = str | Callable[[models.Model], str]
Key = str | Callable[[models.Model], Any]


class StateError(RuntimeError):
    """A change that cannot be streamed as configured."""


@dataclass(frozen=True, eq=False)
class Registration:
    """How one model's rows become entities of one ``type`` in a stream."""

    model: type[models.Model]
    stream: Stream
    type: str
    key: Key = "pk"
    fields: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    serializer: type | None = None
    to_value: Callable[[models.Model], dict] | None = None
    old_value: bool = False
    rows_for_stream: Callable[[str], models.QuerySet] | None = None
    _fields: tuple[models.Field, ...] = field(default=(), repr=False)

    # --- what an instance becomes ---------------------------------------------------

    def stream_for(self, instance: models.Model) -> str:
        path = self.stream(instance) if callable(self.stream) else self.stream
        if not isinstance(path, str) or not path:
            raise StateError(
                f"the stream of {self.model._meta.label} {instance.pk!r} must be a non-empty "
                f"string, not {path!r}"
            )
        return path

    def key_for(self, instance: models.Model) -> str:
        if callable(self.key):
            key = self.key(instance)
        elif self.key == "pk":
            key = instance.pk
        else:
            key = field_value(self.model._meta.get_field(self.key), instance)
        key = "" if key is None else str(key)
        if not key:
            raise StateError(f"{self.model._meta.label} instance has an empty key")
        return key

    def value_for(self, instance: models.Model) -> dict:
        """The entity value: a JSON object, as State Protocol clients need."""
        if self.to_value is not None:
            value = self.to_value(instance)
        elif self.serializer is not None:
            value = self.serializer(instance).data
        else:
            value = {f.name: field_value(f, instance) for f in self._fields}
        try:
            value = jsonable(value)
        except ValueError as exc:
            raise StateError(f"{self.model._meta.label} value: {exc}") from None
        if not isinstance(value, dict):
            raise StateError(
                f"the value of a {self.model._meta.label} must be a JSON object, "
                f"not {type(value).__name__}"
            )
        return value

    # --- what a change needs ----------------------------------------------------------

    @property
    def fixed_stream(self) -> str | None:
        return None if callable(self.stream) else self.stream

    @property
    def needs_before(self) -> bool:
        """Whether events need the row as it was: for ``old_value``, or to see
        that a row moved to another stream or key (delete there, insert here)."""
        return self.old_value or callable(self.stream) or self.key != "pk"

    def affected_by(self, names: Iterable[str]) -> bool:
        """Whether writing only the fields ``names`` may change this entity."""
        if self.to_value or self.serializer or callable(self.stream) or callable(self.key):
            return True
        watched = {n for f in self._fields for n in (f.name, f.attname)}
        if self.key != "pk":
            key_field = self.model._meta.get_field(self.key)
            watched |= {key_field.name, key_field.attname}
        return not watched.isdisjoint(names)

    def insert(self, instance: models.Model, headers: dict) -> tuple[str, dict]:
        key, value = self.key_for(instance), self.value_for(instance)
        return self.stream_for(instance), events.insert(self.type, key, value, **headers)

    def delete(self, instance: models.Model, headers: dict) -> tuple[str, dict]:
        old = {"old_value": self.value_for(instance)} if self.old_value else {}
        key = self.key_for(instance)
        return self.stream_for(instance), events.delete(self.type, key, **old, **headers)

    def update(
        self, instance: models.Model, before: models.Model | None, headers: dict
    ) -> list[tuple[str, dict]]:
        """Events for a row changed from ``before`` (if known) to ``instance``:
        an update, or a delete and an insert if it moved to another stream or key."""
        stream, key = self.stream_for(instance), self.key_for(instance)
        if before is not None and (self.stream_for(before), self.key_for(before)) != (
            stream,
            key,
        ):
            return [self.delete(before, headers), self.insert(instance, headers)]
        old = {}
        if self.old_value and before is not None:
            old["old_value"] = self.value_for(before)
        value = self.value_for(instance)
        return [(stream, events.update(self.type, key, value, **old, **headers))]


def registrations(model: type[models.Model] | None = None) -> list[Registration]:
    """The registrations of ``model`` (every registration if None)."""
    if model is None:
        return [r for regs in _registry.values() for r in regs]
    return list(_registry.get(model, ()))


def streaming(model: type[models.Model], *, inherited: bool = True) -> list[Registration]:
    """The registrations whose events a change of a ``model`` row produces.

    A proxy of a registered model streams as that model. So does a multi-table
    child of one, for saves (``inherited``): Django sends the child's
    ``post_save`` only, but the parent's ``post_delete`` itself when a child
    is deleted, so deletes do not go through the child.
    """
    for klass in model.__mro__:
        regs = _registry.get(klass)
        if not regs:
            continue
        if klass is model or inherited:
            return regs
        same_table = model._meta.concrete_model is klass._meta.concrete_model
        return regs if same_table else []
    return []


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
        registration = _build(
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
        for other in _registry.get(model, ()):
            if (
                other.fixed_stream is not None
                and other.fixed_stream == registration.fixed_stream
                and other.type == registration.type
            ):
                raise ImproperlyConfigured(
                    f"{model._meta.label} is already streamed as {registration.type!r} "
                    f"into {registration.fixed_stream!r}"
                )
        _registry.setdefault(model, []).append(registration)
        _install(model)
        return model

    return apply if model is None else apply(model)


def unregister(model: type[models.Model]) -> None:
    """Stop streaming ``model`` (its signal handlers stay connected but idle)."""
    _registry.pop(model, None)


def _build(model: type[models.Model], **options: Any) -> Registration:
    label = model._meta.label
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise ImproperlyConfigured(f"{model!r} is not a Django model")
    if model._meta.abstract:
        raise ImproperlyConfigured(f"{label} is abstract: register its concrete models")
    stream = options["stream"]
    if not (callable(stream) or (isinstance(stream, str) and stream)):
        raise ImproperlyConfigured(f"{label}: stream must be a non-empty path or a callable")
    type_ = model._meta.model_name if options["type"] is None else options["type"]
    if not isinstance(type_, str) or not type_:
        raise ImproperlyConfigured(f"{label}: type must be a non-empty string")
    key = options["key"]
    if isinstance(key, str) and key != "pk":
        _concrete_field(model, key)
    elif not (key == "pk" or callable(key)):
        raise ImproperlyConfigured(f"{label}: key must be 'pk', a field name or a callable")
    fields, exclude = options["fields"], tuple(options["exclude"])
    serializer, to_value = options["serializer"], options["to_value"]
    if sum(x is not None for x in (fields, serializer, to_value)) > 1:
        raise ImproperlyConfigured(f"{label}: give one of fields, serializer and to_value")
    if isinstance(fields, str):
        raise ImproperlyConfigured(f"{label}: fields must be a list of names, not a string")
    if fields is not None:
        chosen = tuple(_concrete_field(model, name) for name in fields if name not in exclude)
    else:
        for name in exclude:
            _concrete_field(model, name)
        chosen = tuple(f for f in model._meta.concrete_fields if f.name not in exclude)
    if not (chosen or serializer or to_value):
        raise ImproperlyConfigured(f"{label}: no fields left to stream")
    return Registration(
        model=model,
        stream=stream,
        type=type_,
        key=key,
        fields=tuple(fields) if fields is not None else None,
        exclude=exclude,
        serializer=serializer,
        to_value=to_value,
        old_value=bool(options["old_value"]),
        rows_for_stream=options["rows_for_stream"],
        _fields=chosen,
    )


def _concrete_field(model: type[models.Model], name: str) -> models.Field:
    try:
        f = model._meta.get_field(name)
    except FieldDoesNotExist:
        raise ImproperlyConfigured(f"{model._meta.label} has no field {name!r}") from None
    if not getattr(f, "concrete", False) or f.many_to_many:
        raise ImproperlyConfigured(
            f"{model._meta.label}.{name} is not a concrete field: many-to-many and reverse "
            "relations change without saving the row, so they cannot be streamed"
        )
    return f


# --- emission ------------------------------------------------------------------------


def headers() -> dict[str, str]:
    """``txid`` (if one is set) and ``timestamp`` headers for events emitted now."""
    stamped = {"timestamp": events.timestamp()}
    txid = current_txid()
    if txid is not None:
        stamped["txid"] = txid
    return stamped


def append_events(path: str, batch: Sequence[dict]) -> None:
    """Append State Protocol events to ``path`` in the caller's transaction,
    creating the stream (``application/json``) if it does not exist."""
    for start in range(0, len(batch), APPEND_CHUNK):
        chunk = list(batch[start : start + APPEND_CHUNK])
        try:
            api.append(path, chunk, content_type=JSON)
        except NotFound:
            # The failed append rolled back only its own savepoint.
            api.create_stream(path, content_type=JSON)
            api.append(path, chunk, content_type=JSON)


def emit(changes: Iterable[tuple[str, dict]], using: str) -> None:
    """Append ``(stream, event)`` pairs, grouped per stream in order."""
    pending = _buffer.get()
    if pending is not None:
        pending.extend(changes)
        return
    _check_alias(using)
    by_stream: dict[str, list[dict]] = {}
    for path, event in changes:
        by_stream.setdefault(path, []).append(event)
    # Streams are locked in path order, like storage's batches, to avoid deadlocks.
    for path in sorted(by_stream):
        append_events(path, by_stream[path])


def _check_alias(using: str) -> None:
    alias = ds_settings.DATABASE_ALIAS
    if using != alias:
        raise StateError(
            f"a streamed model was written on database {using!r} but streams live on "
            f"{alias!r}: an event must commit in the same transaction as its row"
        )


@contextlib.contextmanager
def collecting() -> Iterator[list[tuple[str, dict]]]:
    """Collect the events emitted inside the block instead of appending them."""
    pending: list[tuple[str, dict]] = []
    token = _buffer.set(pending)
    try:
        yield pending
    finally:
        _buffer.reset(token)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Emit nothing for changes made inside the block.

    For imports and data migrations that a snapshot (or reset and snapshot)
    will publish afterwards; clients see nothing of the block until then.
    """
    token = _paused.set(True)
    try:
        yield
    finally:
        _paused.reset(token)


def is_paused() -> bool:
    return _paused.get()


def fetch(
    model: type[models.Model], using: str, pks: Iterable[Any], *, lock: bool = False
) -> dict[Any, models.Model]:
    """Rows of ``model`` by primary key, read on ``using`` (locked if ``lock``)."""
    pks = list(pks)
    found: dict[Any, models.Model] = {}
    for start in range(0, len(pks), FETCH_CHUNK):
        qs = model._base_manager.using(using).filter(pk__in=pks[start : start + FETCH_CHUNK])
        if lock:
            qs = qs.select_for_update(of=("self",)).order_by("pk")
        found.update((obj.pk, obj) for obj in qs)
    return found


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
    if not regs or is_paused() or _buffer.get() is not None:
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
    if not sender._meta.abstract and any(k in _registry for k in sender.__mro__[1:]):
        _install_one(sender)


def _install_one(model: type[models.Model]) -> None:
    uid = f"durable_streams.state:{model._meta.label}"
    signals.pre_save.connect(_pre_save, sender=model, weak=False, dispatch_uid=uid)
    signals.post_save.connect(_post_save, sender=model, weak=False, dispatch_uid=uid)
    signals.pre_delete.connect(_pre_delete, sender=model, weak=False, dispatch_uid=uid)
    signals.post_delete.connect(_post_delete, sender=model, weak=False, dispatch_uid=uid)
    if not getattr(model.save_base, "_durable_streams_atomic", False):
        model.save_base = _atomic_save_base(model.save_base)
    from .querysets import install_managers

    install_managers(model)


def _atomic_save_base(original: Callable) -> Callable:
    """``save_base`` that runs in a transaction when called in autocommit mode.

    Django sends ``post_save`` after the row is written, and in autocommit
    mode that write has committed by then; inside a transaction the row and
    its event commit (or roll back) together.
    """

    @functools.wraps(original)
    def save_base(self, *args, **kwargs):
        using = args[3] if len(args) > 3 else kwargs.get("using")
        using = using or router.db_for_write(self.__class__, instance=self)
        if connections[using].in_atomic_block:
            return original(self, *args, **kwargs)
        with transaction.atomic(using=using, savepoint=False):
            return original(self, *args, **kwargs)

    save_base._durable_streams_atomic = True  # type: ignore[attr-defined]
    return save_base
