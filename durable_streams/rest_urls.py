"""The operations API: ``path("api/streams/", include("durable_streams.rest_urls"))``.

Kept apart from :mod:`durable_streams.urls`, whose catch-all stream path
would shadow these routes.
"""

from django.urls import path

from .health import health_view
from .rest import StreamDetail, StreamList, StreamSchema

app_name = "durable_streams_api"

urlpatterns = [
    path("streams/", StreamList.as_view(), name="stream-list"),
    path("streams/<path:stream_path>", StreamDetail.as_view(), name="stream-detail"),
    path("schema/", StreamSchema.as_view(), name="schema"),
    path("health/", health_view, name="health"),
]
