"""Mount with ``path("v1/stream/", include("durable_streams.urls"))``."""

from django.urls import path

from .views import stream_view

app_name = "durable_streams"

urlpatterns = [
    path("<path:stream_path>", stream_view, name="stream"),
]
