from django.apps import AppConfig


class DurableStreamsConfig(AppConfig):
    name = "durable_streams"
    verbose_name = "Durable Streams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks and the setting_changed receiver.
        from . import checks, conf  # noqa: F401
