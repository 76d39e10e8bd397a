"""URLs of the example AI chat endpoints (example_project/ai_views.py)."""

from django.urls import path

from . import ai_views

urlpatterns = [
    path("api/aisdk/chat", ai_views.aisdk_chat, name="ai-aisdk-chat"),
    path(
        "api/aisdk/chat/<str:chat_id>/stream", ai_views.aisdk_reconnect, name="ai-aisdk-reconnect"
    ),
    path("api/aisdk/chat-stream", ai_views.aisdk_chat_stream, name="ai-aisdk-chat-stream"),
    path("api/tanstack/chat", ai_views.tanstack_chat, name="ai-tanstack-chat"),
    path("api/tanstack/chat-stream", ai_views.tanstack_chat_stream, name="ai-tanstack-chat-stream"),
]
