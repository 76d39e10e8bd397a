"""The subscription tables (imported by :mod:`durable_streams.models`).

Wake state lives on the subscription row and changes only under that row's
lock (``SELECT ... FOR UPDATE``), so N server processes and ``streams
deliver`` workers agree on every wake. Links hold one acked position per
stream; an append trigger (migration 0002) links streams a pattern discovers
and notifies the engine, inside the append's own transaction.
"""

from __future__ import annotations

from django.db import models


class Subscription(models.Model):
    """One subscription (spec 6): its configuration and its wake state."""

    TYPE_WEBHOOK = "webhook"
    TYPE_PULL_WAKE = "pull-wake"
    TYPES = [(TYPE_WEBHOOK, "webhook"), (TYPE_PULL_WAKE, "pull-wake")]
    STATUSES = [("active", "active"), ("failed", "failed")]

    # The client's id; unique among live rows. A deleted subscription stays as
    # a tombstone, so tokens of an earlier incarnation never match a new one.
    name = models.TextField()
    kind = models.CharField(max_length=16, choices=TYPES)
    pattern = models.TextField(null=True, blank=True)
    # globs.to_regex(pattern), matched by the append trigger against '/' || path.
    pattern_regex = models.TextField(null=True, blank=True)
    webhook_url = models.TextField(null=True, blank=True)
    wake_stream = models.TextField(null=True, blank=True)
    lease_ttl_ms = models.IntegerField()
    description = models.TextField(null=True, blank=True)
    config_hash = models.CharField(max_length=64)
    # Absolute URL of the stream root the subscription was created under:
    # callback and JWKS URLs are built from it when no request is at hand.
    root_url = models.TextField()
    created_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default="active")

    # Wake state (spec 7.3): the current wake, its holder and its lease.
    generation = models.BigIntegerField(default=0)
    wake_id = models.TextField(null=True, blank=True)
    # {path: tail position} when the wake was issued (webhook done auto-acks it).
    wake_snapshot = models.JSONField(null=True, blank=True)
    woken_at = models.DateTimeField(null=True, blank=True)
    holder = models.TextField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    # Webhook delivery (subscriptions.webhooks): the persisted retry schedule.
    # next_attempt_at is set while a delivery is due or in flight, NULL after
    # it succeeded; attempts counts failures of the current schedule.
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    last_delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "durable_streams_subscription"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(deleted_at__isnull=True),
                name="ds_subscription_live_name",
            ),
        ]
        indexes = [
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(deleted_at__isnull=True, lease_expires_at__isnull=False),
                name="ds_subscription_lease",
            ),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(deleted_at__isnull=True, next_attempt_at__isnull=False),
                name="ds_subscription_attempt",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class SubscriptionLink(models.Model):
    """One stream of a subscription and its acked position (spec 6.1).

    ``acked`` is a stream position (see :mod:`durable_streams.offsets`): the
    stream's data below it has been processed. A link exists while the stream
    is linked explicitly or by the pattern; ``explicit`` says which.
    """

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="links", db_index=False
    )
    path = models.TextField()
    explicit = models.BooleanField(default=False)
    acked = models.BigIntegerField(default=0)
    linked_at = models.DateTimeField()

    class Meta:
        db_table = "durable_streams_subscription_link"
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "path"], name="ds_link_sub_path"),
        ]
        indexes = [models.Index(fields=["path"], name="ds_link_path")]

    def __str__(self) -> str:
        return f"{self.subscription_id}:{self.path}"
