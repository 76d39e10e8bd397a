"""Postgres storage for streams, their appends and producer state.

The data path never goes through these classes on the hot path (see
:mod:`durable_streams.storage`), but they define the schema, the admin and
the migrations.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Stream(models.Model):
    """One stream: its configuration, its tail and its closure state."""

    path = models.TextField(unique=True)
    content_type = models.CharField(max_length=255)
    ttl_seconds = models.BigIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    closed = models.BooleanField(default=False)
    # Position after the last unit of data (see durable_streams.offsets).
    tail = models.BigIntegerField(default=0)
    created_at = models.DateTimeField()
    last_access_at = models.DateTimeField()
    # Last accepted Stream-Seq (compared byte-wise in Python, not by collation).
    last_stream_seq = models.TextField(null=True, blank=True)
    # The idempotent-producer tuple whose append closed the stream, if any.
    closed_by_producer = models.TextField(null=True, blank=True)
    closed_by_epoch = models.BigIntegerField(null=True, blank=True)
    closed_by_seq = models.BigIntegerField(null=True, blank=True)
    # Forks share the source's offset space: positions below fork_offset are
    # read from the source chain, positions at or after it from this stream.
    forked_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="forks",
    )
    fork_offset = models.BigIntegerField(null=True, blank=True)
    # Soft-deleted streams keep their data for fork readers (spec 4.2).
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "durable_streams_stream"
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class Segment(models.Model):
    """The bytes of one append (or one PUT body), covering ``[start, end)``.

    For ``application/json`` streams ``data`` holds the messages joined by
    commas and ``boundaries`` the byte offset of each message in ``data``, so
    a read can start at any message without parsing.
    """

    # The unique constraint below indexes stream first; no separate FK index.
    stream = models.ForeignKey(
        Stream, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    start = models.BigIntegerField()
    end = models.BigIntegerField()
    data = models.BinaryField()
    boundaries = ArrayField(models.IntegerField(), null=True, blank=True)

    class Meta:
        db_table = "durable_streams_segment"
        constraints = [
            models.UniqueConstraint(fields=["stream", "end"], name="ds_segment_stream_end"),
        ]

    def __str__(self) -> str:
        return f"{self.stream_id}[{self.start}:{self.end}]"


class ProducerState(models.Model):
    """Idempotent producer state per ``(stream, producer id)`` (spec 5.2.1)."""

    # The unique constraint below indexes stream first; no separate FK index.
    stream = models.ForeignKey(
        Stream, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    producer_id = models.TextField()
    epoch = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "durable_streams_producer"
        constraints = [
            models.UniqueConstraint(fields=["stream", "producer_id"], name="ds_producer_stream_id"),
        ]

    def __str__(self) -> str:
        return f"{self.producer_id}@{self.epoch}:{self.last_seq}"


# The subscription tables (spec 6 and 7) live with their engine.
from .subscriptions.models import Subscription, SubscriptionLink  # noqa: E402, F401

# The webhook signing keys (spec 6.5) live with their signing code.
from .subscriptions.signing import WebhookSigningKey  # noqa: E402, F401
