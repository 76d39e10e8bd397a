"""The test URLconf (tests/ai_settings.py) plus the durable proxy and the
streaming views made resumable (tests/aiapp); the example chat endpoints come
with example_project.urls."""

from django.urls import include, path

from tests.aiapp import views
from tests.stateapp.urls import urlpatterns as state_urlpatterns

urlpatterns = [
    path("v1/proxy/", include("durable_streams.proxy.urls")),
    path("ai-test/sse", views.slow_sse),
    path("ai-test/text", views.slow_text),
    path("ai-test/failing", views.failing_sse),
    *state_urlpatterns,
]
