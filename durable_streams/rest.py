"""A read-only JSON API (Django REST framework) over stream metadata.

Mount with ``path("api/streams/", include("durable_streams.rest_urls"))``:

* ``GET streams/`` lists streams, cursor-paginated by path (no ``COUNT(*)``,
  so it stays fast with millions of rows) and filterable (see
  :class:`StreamFilter`);
* ``GET streams/<path>`` one stream's metadata, its producers and forks;
* ``GET schema/`` the OpenAPI 3 schema (drf-spectacular);
* ``GET health/`` the health check (:mod:`durable_streams.health`).

Access is ``DURABLE_STREAMS["API_PERMISSION_CLASSES"]`` (admin users by
default) with ``API_AUTHENTICATION_CLASSES`` (None: the project's DRF defaults).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import generics, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.settings import api_settings

from . import catalog
from .conf import ds_settings
from .models import ProducerState, Stream
from .permissions import import_classes


class StreamSerializer(serializers.Serializer):
    """One stream as the list shows it (see :func:`catalog.describe`)."""

    path = serializers.CharField()
    url = serializers.CharField(allow_null=True, help_text="URL path of the stream itself")
    content_type = serializers.CharField()
    kind = serializers.ChoiceField(choices=catalog.KINDS)
    state = serializers.ChoiceField(choices=catalog.STATES)
    closed = serializers.BooleanField()
    tail_offset = serializers.CharField(help_text="Stream-Next-Offset at the tail")
    size_bytes = serializers.IntegerField(
        allow_null=True, help_text="Bytes up to the tail (binary and text streams)"
    )
    message_count = serializers.IntegerField(
        allow_null=True, help_text="Messages up to the tail (JSON streams)"
    )
    ttl_seconds = serializers.IntegerField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True, help_text="When it expires, if ever")
    created_at = serializers.DateTimeField()
    last_access_at = serializers.DateTimeField()
    deleted_at = serializers.DateTimeField(allow_null=True)
    forked_from = serializers.CharField(allow_null=True, help_text="Path of the fork source")
    fork_offset = serializers.CharField(allow_null=True)
    fork_count = serializers.IntegerField()

    def describe(self, instance: Stream) -> dict[str, Any]:
        return catalog.describe(instance)

    def to_representation(self, instance: Stream) -> dict[str, Any]:
        return super().to_representation(self.describe(instance))


class ProducerSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProducerState
        fields = ["producer_id", "epoch", "last_seq", "updated_at"]


class StreamDetailSerializer(StreamSerializer):
    producers = ProducerSerializer(many=True)
    forks = serializers.ListField(child=serializers.CharField(), help_text="Paths of its forks")

    def describe(self, instance: Stream) -> dict[str, Any]:
        return {
            **super().describe(instance),
            "producers": catalog.producers(instance),
            "forks": [fork.path for fork in catalog.forks(instance)],
        }


class StreamFilter(django_filters.FilterSet):
    prefix = django_filters.CharFilter(
        field_name="path", lookup_expr="startswith", label="Path starts with"
    )
    content_type = django_filters.CharFilter(
        field_name="content_type", lookup_expr="istartswith", label="Content type starts with"
    )
    kind = django_filters.ChoiceFilter(choices=catalog.KINDS, method="filter_kind")
    state = django_filters.ChoiceFilter(choices=catalog.STATES, method="filter_state")
    forked_from = django_filters.CharFilter(
        field_name="forked_from__path", label="Path of the fork source"
    )
    is_fork = django_filters.BooleanFilter(
        field_name="forked_from", lookup_expr="isnull", exclude=True, label="Is a fork"
    )

    class Meta:
        model = Stream
        fields: list[str] = []

    def filter_kind(self, queryset, name, value):
        return queryset.filter(catalog.kind_q(value))

    def filter_state(self, queryset, name, value):
        return queryset.filter(catalog.state_q(value))


class PathCursorPagination(CursorPagination):
    ordering = "path"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class _Schema(AutoSchema):
    """drf-spectacular's inspector with a fixed operation id (the project's
    DEFAULT_SCHEMA_CLASS need not be drf-spectacular's)."""

    def __init__(self, operation_id: str) -> None:
        super().__init__()
        self.operation_id = operation_id

    def get_operation_id(self) -> str:
        return self.operation_id


class _Guarded:
    """Authentication and permissions from ``DURABLE_STREAMS``, read per request."""

    def get_authenticators(self):
        configured = ds_settings.API_AUTHENTICATION_CLASSES
        classes = import_classes(configured, api_settings.DEFAULT_AUTHENTICATION_CLASSES)
        return [cls() for cls in classes]

    def get_permissions(self):
        classes = import_classes(ds_settings.API_PERMISSION_CLASSES, ())
        return [cls() for cls in classes]


class StreamList(_Guarded, generics.ListAPIView):
    """Streams, ordered by path; follow ``next`` for more."""

    schema = _Schema("list_streams")
    serializer_class = StreamSerializer
    pagination_class = PathCursorPagination
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    filterset_class = StreamFilter

    def get_queryset(self):
        return catalog.streams()


class StreamDetail(_Guarded, generics.RetrieveAPIView):
    """One stream's metadata, its idempotent producers and its forks."""

    schema = _Schema("get_stream")
    serializer_class = StreamDetailSerializer

    def get_queryset(self):
        return catalog.streams()

    def get_object(self):
        return get_object_or_404(self.get_queryset(), path=self.kwargs["stream_path"])


class StreamSchema(_Guarded, SpectacularAPIView):
    """The OpenAPI 3 schema of this API (YAML, or JSON with ``?format=json``)."""

    urlconf = "durable_streams.rest_urls"
    schema = None  # not part of the schema it serves

    def get(self, request, *args, **kwargs):
        # Paths are relative to where the API is mounted; the server URL says where.
        mount = request.path.removesuffix("schema/")
        self.custom_settings = {
            "TITLE": "Durable Streams operations API",
            "DESCRIPTION": "Stream listing and metadata (read-only).",
            "VERSION": "1",
            "SERVERS": [{"url": request.build_absolute_uri(mount).rstrip("/")}],
        }
        return super().get(request, *args, **kwargs)
