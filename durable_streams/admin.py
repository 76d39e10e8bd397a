"""The Django admin for streams: look inside, and act on them.

Read-only for the models themselves (like procrastinate's Django contrib):
Django's add, change and delete forms are off. Instead:

* the list shows each stream's path, type, size, tail, state, expiry, last
  activity and forks, searchable by path prefix and filterable by type and
  state, without full-table counts or per-row scans of the appends;
* a stream's page shows its content paged by offset (pretty JSON, State
  Protocol events as a table, text, or a hex dump), a live tail fed by an
  ``EventSource`` on the stream's SSE URL, its producers, fork source and forks;
* actions create, close, delete, fork and snapshot (models registered for
  streaming) go through the same storage as the protocol, guarded by the
  model permissions ``add_stream`` (create, fork), ``change_stream`` (close,
  snapshot) and ``delete_stream``.

Templates: ``templates/admin/durable_streams/stream/``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from . import api, catalog, content, offsets, storage
from .admin_content import render_content
from .exceptions import StreamError
from .models import ProducerState, Stream

# Most bytes of stream content one page of the stream view shows.
PAGE_BYTES = 32 * 1024
_TEMPLATES = "admin/durable_streams/stream/"


# --- the list ----------------------------------------------------------------------


class KindFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return catalog.KINDS

    def queryset(self, request, queryset):
        return queryset.filter(catalog.kind_q(self.value())) if self.value() else queryset


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return catalog.STATES

    def queryset(self, request, queryset):
        return queryset.filter(catalog.state_q(self.value())) if self.value() else queryset


class EstimatedCountPaginator(Paginator):
    """Counts filtered lists exactly, but an unfiltered list of a big table
    by the planner's estimate, so the first page never waits on ``COUNT(*)``."""

    ESTIMATE_ABOVE = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            with connections[queryset.db].cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [queryset.model._meta.db_table],
                )
                estimate = cursor.fetchone()[0]
            if estimate > self.ESTIMATE_ABOVE:
                return estimate
        return super().count


# --- forms of the actions ------------------------------------------------------------


def _valid_path(value: str) -> str:
    from .storage import check_path  # the protocol's own rule for stream paths

    try:
        check_path(value)
    except StreamError as exc:
        raise forms.ValidationError(exc.message) from None
    if not value or value.startswith("/"):
        raise forms.ValidationError("a stream path is relative and not empty")
    return value


def _valid_offset(value: str) -> str:
    """Empty (the tail), ``-1`` or a token: a fork point or a page to show."""
    if value:
        try:
            position = offsets.parse(value)
        except offsets.InvalidOffset:
            position = None
        if position is None:
            raise forms.ValidationError("an offset token, or -1 for the start")
    return value


class CreateStreamForm(forms.Form):
    path = forms.CharField(max_length=1024, validators=[_valid_path])
    content_type = forms.CharField(max_length=255, initial=content.JSON)
    ttl_seconds = forms.IntegerField(
        required=False, min_value=0, label="TTL (seconds)", help_text="Sliding: reads renew it."
    )
    expires_at = forms.DateTimeField(required=False, help_text="Or an absolute expiry.")
    closed = forms.BooleanField(required=False, help_text="Create it closed.")
    data = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Initial content (a JSON value or array for JSON streams).",
    )

    def clean_content_type(self) -> str:
        value = self.cleaned_data["content_type"]
        if not content.valid_content_type(value):
            raise forms.ValidationError("not a valid media type")
        return value

    def clean(self) -> dict:
        data = super().clean()
        if data.get("ttl_seconds") is not None and data.get("expires_at") is not None:
            raise forms.ValidationError("Set a TTL or an expiry time, not both.")
        return data


class ForkForm(forms.Form):
    path = forms.CharField(max_length=1024, label="New stream", validators=[_valid_path])
    offset = forms.CharField(
        required=False,
        validators=[_valid_offset],
        help_text="Fork point; empty: the source's tail.",
    )


# --- snapshot (model change streams) -------------------------------------------------


def _registrations(path: str | None = None) -> list[dict[str, str]]:
    """Models registered for streaming (whose streams may include ``path``)."""
    from .state import registrations

    return [
        {"model": reg.model._meta.label, "type": reg.type}
        for reg in registrations()
        if path is None or reg.fixed_stream is None or reg.fixed_stream == path
    ]


# --- the model admin ------------------------------------------------------------------


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    list_display = (
        "path",
        "content_type",
        "size",
        "messages",
        "tail_offset",
        "state",
        "expiry",
        "last_activity",
        "forks_column",
    )
    list_filter = (KindFilter, StateFilter)
    # Prefix search uses the path index; "contains" would scan every row.
    search_fields = ("path__startswith",)
    search_help_text = "Streams whose path starts with the text."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would count the whole table
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = None
    ordering = ("path",)
    change_list_template = _TEMPLATES + "change_list.html"

    # Read-only: Django's own forms are off; the actions below replace them.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Stream]:
        return catalog.streams()

    # --- columns ---

    @admin.display(description="size", ordering="tail")
    def size(self, obj: Stream) -> str:
        size = catalog.size_bytes(obj)
        return "—" if size is None else f"{size:,} B"

    @admin.display(description="messages")
    def messages(self, obj: Stream) -> str:
        count = catalog.message_count(obj)
        return "—" if count is None else f"{count:,}"

    @admin.display(description="tail offset")
    def tail_offset(self, obj: Stream) -> str:
        return format_html('<code class="ds-offset">{}</code>', offsets.encode(obj.tail))

    @admin.display(description="state")
    def state(self, obj: Stream) -> str:
        state = catalog.state_of(obj)
        return format_html('<span class="ds-state ds-state-{}">{}</span>', state, state)

    @admin.display(description="TTL / expiry", ordering="deadline")
    def expiry(self, obj: Stream) -> str:
        if obj.deadline is None:
            return "never"
        when = obj.deadline.strftime("%Y-%m-%d %H:%M:%S %Z")
        if obj.ttl_seconds is not None:
            return f"TTL {obj.ttl_seconds}s → {when}"
        return when

    @admin.display(description="last activity", ordering="last_access_at")
    def last_activity(self, obj: Stream) -> str:
        return obj.last_access_at.strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="forks")
    def forks_column(self, obj: Stream) -> str:
        parts = []
        if obj.forked_from_id is not None:
            url = reverse("admin:durable_streams_stream_change", args=[obj.forked_from_id])
            parts.append(format_html('from <a href="{}">{}</a>', url, obj.forked_from.path))
        if obj.fork_count:
            parts.append(f"{obj.fork_count} fork{'s' if obj.fork_count != 1 else ''}")
        return format_html("{}", "; ".join(str(p) for p in parts)) if parts else "—"

    # --- pages ---

    def get_urls(self):
        def route(suffix: str, view, name: str, post_only: bool = True):
            view = require_POST(view) if post_only else view
            return path(
                suffix, self.admin_site.admin_view(view), name=f"durable_streams_stream_{name}"
            )

        return [
            route("create/", self.create_view, "create", post_only=False),
            route("snapshot-all/", self.snapshot_all_view, "snapshot_all"),
            route("<int:object_id>/close/", self.close_view, "close"),
            route("<int:object_id>/remove/", self.remove_view, "remove"),
            route("<int:object_id>/fork/", self.fork_view, "fork", post_only=False),
            route("<int:object_id>/snapshot/", self.snapshot_view, "snapshot"),
            *super().get_urls(),
        ]

    def _require(self, request: HttpRequest, action: str) -> None:
        if not request.user.has_perm(f"durable_streams.{action}_stream"):
            raise PermissionDenied

    def _page_url(self, object_id: int) -> str:
        return reverse("admin:durable_streams_stream_change", args=[object_id])

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        user = request.user
        extra = {
            "can_create": user.has_perm("durable_streams.add_stream"),
            "snapshot_models": _registrations()
            if user.has_perm("durable_streams.change_stream")
            else [],
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        """The stream page (it shows and acts; there is no change form)."""
        stream = self.get_object(request, object_id)  # None for a malformed or unknown id
        if stream is None:
            raise Http404("no such stream")
        if not self.has_view_permission(request, stream):
            raise PermissionDenied
        described = catalog.describe(stream)
        kind = described["kind"]
        page: dict[str, Any] = {}
        offset = request.GET.get("offset") or offsets.BEGINNING
        if described["state"] in ("open", "closed"):
            page = self._content(stream, offset)
        user = request.user
        url = described["url"]
        live = None
        if url and described["state"] == "open":
            live = {"url": url, "offset": offsets.encode(stream.tail), "kind": kind}
        registrations = _registrations(stream.path)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": stream.path,
            "subtitle": None,
            "stream": stream,
            "d": described,
            "page": page,
            "live": live,
            "producers": catalog.producers(stream),
            "forks": catalog.forks(stream),
            "can_close": user.has_perm("durable_streams.change_stream")
            and described["state"] == "open",
            "can_delete": user.has_perm("durable_streams.delete_stream")
            and described["state"] in ("open", "closed"),
            "can_fork": user.has_perm("durable_streams.add_stream")
            and described["state"] in ("open", "closed"),
            "can_snapshot": bool(registrations)
            and user.has_perm("durable_streams.change_stream")
            and described["state"] in ("open", "closed")
            and kind == "json",
            "snapshot_models": registrations,
            "fork_form": ForkForm(initial={"offset": described["tail_offset"]}),
            "has_permission": True,
            **(extra_context or {}),
        }
        return TemplateResponse(request, _TEMPLATES + "detail.html", context)

    def _content(self, stream: Stream, offset: str) -> dict[str, Any]:
        try:
            _valid_offset(offset)
            position = offsets.parse(offset)
            result = storage.peek(stream.path, position, max_bytes=PAGE_BYTES)
        except forms.ValidationError:
            return {"error": "That is not an offset of this stream."}
        except StreamError as exc:
            return {"error": exc.message}
        return {
            "offset": offsets.encode(result.start),
            "next_offset": result.next_offset,
            "at_tail": result.up_to_date,
            "units": result.units,
            "bytes": len(result.body),
            **render_content(catalog.kind_of(stream), result),
        }

    def create_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "add")
        form = CreateStreamForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                meta = api.create_stream(
                    data["path"],
                    content_type=data["content_type"],
                    ttl_seconds=data["ttl_seconds"],
                    expires_at=data["expires_at"],
                    closed=data["closed"],
                    data=data["data"] or None,
                )
            except StreamError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Stream {meta.path} is ready.")
                return HttpResponseRedirect(self._page_url(meta.id))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Create a stream",
            "form": form,
            "has_permission": True,
        }
        return TemplateResponse(request, _TEMPLATES + "create.html", context)

    def close_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        self._require(request, "change")
        stream = get_object_or_404(Stream, pk=object_id)
        try:
            api.close(stream.path)
        except StreamError as exc:
            messages.error(request, f"Not closed: {exc.message}")
        else:
            messages.success(request, f"Stream {stream.path} is closed.")
        return HttpResponseRedirect(self._page_url(stream.pk))

    def remove_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        self._require(request, "delete")
        stream = get_object_or_404(Stream, pk=object_id)
        try:
            api.delete(stream.path)
        except StreamError as exc:
            messages.error(request, f"Not deleted: {exc.message}")
            return HttpResponseRedirect(self._page_url(stream.pk))
        messages.success(request, f"Stream {stream.path} is deleted.")
        return HttpResponseRedirect(reverse("admin:durable_streams_stream_changelist"))

    def fork_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        self._require(request, "add")
        source = get_object_or_404(Stream, pk=object_id)
        form = ForkForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            offset = form.cleaned_data["offset"]
            position = None
            if offset:
                position = offsets.parse(offset)
            try:
                _, meta = storage.create_stream(
                    form.cleaned_data["path"],
                    content_type=None,
                    fork=storage.ForkSpec(source.path, position),
                )
            except StreamError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Forked {source.path} as {meta.path}.")
                return HttpResponseRedirect(self._page_url(meta.id))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Fork {source.path}",
            "form": form,
            "source": source,
            "has_permission": True,
        }
        return TemplateResponse(request, _TEMPLATES + "fork.html", context)

    def snapshot_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        from .state import StateError, snapshot

        self._require(request, "change")
        stream = get_object_or_404(Stream, pk=object_id)
        try:
            result = snapshot(stream.path, reset=bool(request.POST.get("reset")))
        except (StreamError, StateError) as exc:
            messages.error(request, f"No snapshot: {exc}")
        else:
            messages.success(request, f"Snapshot of {result.rows} rows written to {stream.path}.")
        return HttpResponseRedirect(self._page_url(stream.pk))

    def snapshot_all_view(self, request: HttpRequest) -> HttpResponse:
        from .state import StateError, snapshot_all

        self._require(request, "change")
        try:
            results = snapshot_all(reset=bool(request.POST.get("reset")))
        except (StreamError, StateError) as exc:
            messages.error(request, f"No snapshot: {exc}")
        else:
            rows = sum(r.rows for r in results)
            messages.success(request, f"Snapshot of {rows} rows written to {len(results)} streams.")
        return HttpResponseRedirect(reverse("admin:durable_streams_stream_changelist"))


@admin.register(ProducerState)
class ProducerStateAdmin(admin.ModelAdmin):
    """Idempotent producer states, read-only (each stream's page lists its own)."""

    list_display = ("producer_id", "stream", "epoch", "last_seq", "updated_at")
    list_select_related = ("stream",)
    search_fields = ("producer_id__startswith",)
    search_help_text = "Producers whose id starts with the text."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    ordering = ("-updated_at",)
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


from .subscriptions import admin as _subscriptions_admin  # noqa: E402, F401  (registers it)
