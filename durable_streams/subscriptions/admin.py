"""Admin pages for subscriptions: configuration, wake state, and each linked
stream's acked offset beside its tail. Read-only; deleting tombstones the
subscription through the engine, exactly like ``DELETE __ds/subscriptions/:id``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .. import offsets
from ..conf import ds_settings
from . import engine
from .models import Subscription, SubscriptionLink


class LiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("live", "live"), ("deleted", "deleted")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


class LinkInline(admin.TabularInline):
    model = SubscriptionLink
    extra = 0
    can_delete = False
    fields = ("path", "link_type", "acked_offset", "tail_offset", "pending")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[SubscriptionLink]:
        qs = super().get_queryset(request).using(ds_settings.DATABASE_ALIAS)
        self._tails = engine.tails(qs.values_list("path", flat=True))
        return qs

    @admin.display(description="link")
    def link_type(self, obj: SubscriptionLink) -> str:
        return "explicit" if obj.explicit else "glob"

    @admin.display(description="acked offset")
    def acked_offset(self, obj: SubscriptionLink) -> str:
        return offsets.encode(obj.acked)

    @admin.display(description="tail offset")
    def tail_offset(self, obj: SubscriptionLink) -> str:
        return offsets.encode(getattr(self, "_tails", {}).get(obj.path, 0))

    @admin.display(description="pending", boolean=True)
    def pending(self, obj: SubscriptionLink) -> bool:
        return getattr(self, "_tails", {}).get(obj.path, 0) > obj.acked


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "pattern",
        "status",
        "generation",
        "holder",
        "lease",
        "next_attempt_at",
        "deleted_at",
    )
    list_filter = ("kind", "status", LiveFilter)
    search_fields = ("name", "pattern", "webhook_url", "wake_stream")
    inlines = [LinkInline]
    fieldsets = [
        (
            None,
            {
                "fields": (
                    "name",
                    "kind",
                    "pattern",
                    "webhook_url",
                    "wake_stream",
                    "lease_ttl_ms",
                    "description",
                    "created_at",
                    "deleted_at",
                )
            },
        ),
        (
            "Wake state",
            {
                "fields": (
                    "status",
                    "generation",
                    "wake_id",
                    "holder",
                    "lease_expires_at",
                    "woken_at",
                )
            },
        ),
        (
            "Webhook delivery",
            {"fields": ("attempts", "next_attempt_at", "last_delivered_at", "last_error")},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subscription]:
        return super().get_queryset(request).using(ds_settings.DATABASE_ALIAS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Subscription._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="lease")
    def lease(self, obj: Subscription) -> str:
        if obj.lease_expires_at is None:
            return "-"
        left = (obj.lease_expires_at - timezone.now()).total_seconds()
        return f"{left:.1f} s left" if left > 0 else "expired"

    def delete_model(self, request: HttpRequest, obj: Subscription) -> None:
        engine.delete(obj.name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        for name in queryset.filter(deleted_at__isnull=True).values_list("name", flat=True):
            engine.delete(name)
