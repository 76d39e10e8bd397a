"""A Channels project as one usually looks, with the streams added to its router.

WebSocket routes behind ``AuthMiddlewareStack`` (and the allowed-hosts origin
check), Django for the rest of HTTP, and the stream URLs answered by
:class:`durable_streams.asgi.StreamsASGIApp` in the ``"http"`` entry
(tests/acceptance/test_channels_router.py serves it with daphne).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import JsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from durable_streams.asgi import StreamsASGIApp  # noqa: E402


class WhoAmI(JsonWebsocketConsumer):
    """Answers each message with the signed-in user AuthMiddlewareStack found."""

    def connect(self) -> None:
        self.accept()

    def receive_json(self, content, **kwargs) -> None:
        user = self.scope["user"]
        self.send_json({"echo": content, "user": user.get_username() or None})


websocket_urlpatterns = [path("ws/whoami/", WhoAmI.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": StreamsASGIApp(django_asgi_app, prefix="/v1/stream/"),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
