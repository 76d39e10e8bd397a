from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "sessions"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="sessions/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="sessions:login"), name="logout"),
    path("", views.session_list, name="list"),
    path("<uuid:session_id>/", views.session_detail, name="detail"),
    path("<uuid:session_id>/invite", views.invite, name="invite"),
    path("<uuid:session_id>/agents", views.add_agent, name="agents"),
    path("<uuid:session_id>/messages", views.post_message, name="messages"),
    path("<uuid:session_id>/presence", views.update_presence, name="presence"),
]
