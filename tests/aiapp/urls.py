from django.urls import include, path

from . import views

urlpatterns = [
    path("v1/proxy/", include("durable_streams.proxy.urls")),
    path("ai-test/sse", views.slow_sse),
    path("ai-test/text", views.slow_text),
    path("ai-test/failing", views.failing_sse),
    path("", include("tests.stateapp.urls")),
]
