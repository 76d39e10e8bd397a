"""When a stream expires: the one home of the deadline rule (spec 5.1).

A stream with a TTL expires ``ttl_seconds`` after its last access (reads and
appends slide it); otherwise at its absolute ``expires_at``, if it has one. It
is expired once its deadline is at or before "now".

The rule is needed in three forms: in Python for a row already read, in the
ORM for the operator views that filter on it (admin, JSON API, ``streams``
command), and in raw SQL for the expiry sweep. All three are written here from
the same three columns, and tests/integration/test_deadline.py checks that they
agree on every kind of row.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import (
    Case,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    Value,
    When,
)

# The columns the rule reads (fields of durable_streams.models.Stream).
TTL = "ttl_seconds"
LAST_ACCESS = "last_access_at"
EXPIRES = "expires_at"
# Name of the annotation that carries the deadline in ORM querysets.
ANNOTATION = "deadline"


def deadline(
    ttl_seconds: int | None, last_access_at: dt.datetime, expires_at: dt.datetime | None
) -> dt.datetime | None:
    """The deadline of a row already read, None if it never expires."""
    if ttl_seconds is not None:
        return last_access_at + dt.timedelta(seconds=ttl_seconds)
    return expires_at


def is_past(deadline: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether a stream with this deadline has expired at ``now``."""
    return deadline is not None and deadline <= now


def expression() -> ExpressionWrapper:
    """The deadline as an ORM expression (annotate it as :data:`ANNOTATION`)."""
    ttl = ExpressionWrapper(F(TTL) * Value(dt.timedelta(seconds=1)), output_field=DurationField())
    return ExpressionWrapper(
        Case(When(**{f"{TTL}__isnull": False}, then=F(LAST_ACCESS) + ttl), default=F(EXPIRES)),
        output_field=DateTimeField(),
    )


def expired_q(now: dt.datetime) -> Q:
    """Filter for expired rows of a queryset annotated with :func:`expression`."""
    return Q(**{f"{ANNOTATION}__lte": now})


def unexpired_q(now: dt.datetime) -> Q:
    """The complement of :func:`expired_q` (rows that never expire included)."""
    return Q(**{f"{ANNOTATION}__isnull": True}) | Q(**{f"{ANNOTATION}__gt": now})


# The deadline in SQL, over the stream table's columns; NULL: never expires.
SQL = (
    f"(CASE WHEN {TTL} IS NOT NULL"
    f" THEN {LAST_ACCESS} + {TTL} * interval '1 second' ELSE {EXPIRES} END)"
)


def expired_sql(now_param: str = "%(now)s") -> str:
    """A SQL condition true for expired rows; ``now_param`` is the placeholder of now."""
    return f"{SQL} <= {now_param}"
