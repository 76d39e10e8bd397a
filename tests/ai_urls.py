"""The test URLconf plus the example AI chat endpoints (tests/ai_settings.py)."""

from django.urls import include, path

from tests.stateapp.urls import urlpatterns as state_urlpatterns

urlpatterns = [*state_urlpatterns, path("", include("example_project.ai_urls"))]
