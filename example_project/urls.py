from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    # What `make run` shows first: where everything is.
    path("", TemplateView.as_view(template_name="index.html"), name="home"),
    path("admin/", admin.site.urls),
    path("v1/stream/", include("durable_streams.urls")),
    path("api/durable-streams/", include("durable_streams.rest_urls")),
    path("sessions/", include("example_project.sessions.urls")),
    # The AI chat endpoints of docs/ai-streaming.md (AI SDK and TanStack AI transports).
    path("", include("example_project.ai_urls")),
]
