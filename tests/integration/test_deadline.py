"""The deadline rule's three forms (Python, ORM, SQL) agree on every kind of row."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from durable_streams.models import Stream
from durable_streams.storage import StreamMeta, deadline
from durable_streams.storage.schema import COLUMNS, STREAM

from ..support import unique

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)

# (ttl_seconds, last access relative to now, expires_at relative to now, expired?)
CASES = [
    (None, -HOUR, None, False),  # never expires
    (60, -HOUR, None, True),  # TTL ran out
    (7200, -HOUR, None, False),  # TTL still running
    (3600, -HOUR, None, True),  # deadline exactly now: expired
    (None, -HOUR, -HOUR, True),  # absolute deadline passed
    (None, -HOUR, HOUR, False),  # absolute deadline ahead
    (60, -HOUR, HOUR, True),  # the TTL wins over an absolute deadline
    (7200, -HOUR, -HOUR, False),
]


@pytest.fixture
def rows():
    now = timezone.now()
    made = {}
    for ttl, last, expires, expired in CASES:
        stream = Stream.objects.create(
            path=unique("deadline"),
            content_type="text/plain",
            ttl_seconds=ttl,
            last_access_at=now + last,
            created_at=now + last,
            expires_at=None if expires is None else now + expires,
        )
        made[stream.id] = expired
    return now, made


def test_python_orm_and_sql_forms_agree(rows):
    now, expected = rows
    ids = list(expected)

    python = {}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {COLUMNS} FROM {STREAM} WHERE id = ANY(%s)", [ids])
        for row in cursor.fetchall():
            python[row[0]] = StreamMeta.from_row(row).is_expired(now)

    annotated = Stream.objects.filter(id__in=ids).annotate(
        **{deadline.ANNOTATION: deadline.expression()}
    )
    orm = set(annotated.filter(deadline.expired_q(now)).values_list("id", flat=True))
    orm_live = set(annotated.filter(deadline.unexpired_q(now)).values_list("id", flat=True))

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {STREAM} WHERE id = ANY(%(ids)s) AND {deadline.expired_sql()}",
            {"ids": ids, "now": now},
        )
        sql = {row[0] for row in cursor.fetchall()}

    assert python == expected
    assert orm == {i for i, expired in expected.items() if expired}
    assert orm_live == {i for i, expired in expected.items() if not expired}
    assert sql == orm
