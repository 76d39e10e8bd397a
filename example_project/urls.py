from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/stream/", include("durable_streams.urls")),
    path("api/durable-streams/", include("durable_streams.rest_urls")),
    path("sessions/", include("example_project.sessions.urls")),
    # The AI chat endpoints of docs/ai-streaming.md (AI SDK and TanStack AI transports).
    path("", include("example_project.ai_urls")),
]
