from django.urls import include, path

from . import views

urlpatterns = [
    path("state-test/rooms/<int:room_id>/messages", views.post_message),
    path("", include("example_project.urls")),
]
