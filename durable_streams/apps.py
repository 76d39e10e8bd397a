from django.apps import AppConfig


class DurableStreamsConfig(AppConfig):
    name = "durable_streams"
    verbose_name = "Durable Streams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks and the setting_changed receiver.
        from django.db.models.signals import post_migrate

        from . import checks, conf  # noqa: F401

        post_migrate.connect(_create_registered_streams, sender=self)


def _create_registered_streams(sender, using: str = "default", **kwargs) -> None:
    """Registered models' fixed streams exist from ``migrate`` on (read as empty)."""
    from .state.emission import create_registered_streams

    create_registered_streams(using)
