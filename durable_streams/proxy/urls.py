"""Mount with ``path("v1/proxy/", include("durable_streams.proxy.urls"))``.

``POST /v1/proxy/`` creates a proxy stream; ``/v1/proxy/<stream-id>`` reads,
aborts and deletes it.
"""

from django.urls import path

from .views import create_view, stream_view

app_name = "durable_streams_proxy"

urlpatterns = [
    path("", create_view, name="create"),
    path("<str:stream_id>", stream_view, name="stream"),
]
