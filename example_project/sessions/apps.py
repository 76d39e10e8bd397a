from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "example_project.sessions"
    # "sessions" is django.contrib.sessions' label.
    label = "durable_sessions"
    verbose_name = "Durable Sessions"
    default_auto_field = "django.db.models.BigAutoField"
