"""The test URLconf plus the AI endpoints (tests/ai_settings.py): the example
chat endpoints and the durable proxy."""

from django.urls import include, path

from tests.stateapp.urls import urlpatterns as state_urlpatterns

urlpatterns = [
    *state_urlpatterns,
    path("v1/proxy/", include("durable_streams.proxy.urls")),
    path("", include("example_project.ai_urls")),
]
