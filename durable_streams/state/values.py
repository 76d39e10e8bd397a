"""Model field values as plain JSON, normalised the way the database stores them.

An event's value must equal what a snapshot (a fresh read of the row) would
produce, whether it was built from the instance a caller just saved or from a
row read back from the database. So values go through the field's
``to_python`` and a fixed textual form: aware datetimes in UTC with a ``Z``,
decimals with the field's decimal places, UUIDs as strings, durations in ISO
8601, binary data in base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.duration import duration_iso_string
from django.utils.functional import Promise

__all__ = ["field_value", "jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` as JSON types (dict with str keys, list, str, int, float, bool, None).

    Raises ValueError for values JSON cannot carry (NaN, infinities, unknown types).
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be sent as JSON")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"JSON object keys must be strings, not {key!r}")
            out[key] = jsonable(item)
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return duration_iso_string(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{value!r} cannot be sent as JSON")
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Promise):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return [jsonable(item) for item in sorted(value, key=repr)]
    raise ValueError(f"{type(value).__name__} values cannot be sent as JSON")


def field_value(field: models.Field, instance: models.Model) -> Any:
    """The JSON form of ``field`` on ``instance``, as the database holds it."""
    value = field.value_from_object(instance)
    if isinstance(field, models.FileField):
        return (value.name or None) if value is not None else None
    if isinstance(field, models.JSONField):
        return jsonable(value)
    if value is not None:
        value = field.to_python(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None and settings.USE_TZ:
        # Django stores a naive datetime as one in the current time zone.
        value = timezone.make_aware(value)
    if isinstance(field, models.DecimalField) and isinstance(value, decimal.Decimal):
        # The column's scale: 1.5 saved into decimal_places=2 reads back as 1.50.
        if value.is_finite() and field.decimal_places is not None:
            value = value.quantize(decimal.Decimal(1).scaleb(-field.decimal_places))
    return jsonable(value)
