"""Registrations: how a model's rows become State Protocol entities, and the lookup of them.

This module holds the data only. :func:`durable_streams.state.register`
(``hooks``) builds a registration here and installs the hooks that emit its
events; ``emission``, ``querysets`` and ``snapshots`` look registrations up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from . import events
from .values import field_value, jsonable

__all__ = [
    "Key",
    "Registration",
    "StateError",
    "Stream",
    "add",
    "build",
    "has_registered_ancestor",
    "registrations",
    "remove",
    "streaming",
]

_registry: dict[type[models.Model], list[Registration]] = {}

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


def has_registered_ancestor(model: type[models.Model]) -> bool:
    """Whether a registered model is among the ancestors of ``model``."""
    return any(klass in _registry for klass in model.__mro__[1:])


def add(registration: Registration) -> None:
    """Record ``registration``; refuses a second one of the same type into the same stream."""
    model = registration.model
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


def remove(model: type[models.Model]) -> None:
    """Forget the registrations of ``model``."""
    _registry.pop(model, None)


def build(model: type[models.Model], **options: Any) -> Registration:
    """A checked registration of ``model`` with the options of ``register()``."""
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
