from django.apps import AppConfig


class StateAppConfig(AppConfig):
    name = "tests.stateapp"
    label = "stateapp"
    default_auto_field = "django.db.models.BigAutoField"

    registered = False

    def ready(self) -> None:
        # Django may call ready() again when a test overrides INSTALLED_APPS;
        # registering twice would stream every member change twice.
        if StateAppConfig.registered:
            return
        StateAppConfig.registered = True
        # The call form of registration, as a project would use for a model it
        # does not own: members stream into their room's stream, with a DRF
        # serializer and a UUID key.
        from durable_streams import state

        from .models import Member, room_stream, rows_of_room
        from .serializers import MemberSerializer

        state.register(
            Member,
            stream=room_stream,
            type="member",
            key="uid",
            serializer=MemberSerializer,
            rows_for_stream=rows_of_room(Member),
        )
