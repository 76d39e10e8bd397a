"""ASGI entry points of the example project.

``application`` (what ``make run`` serves) answers ``/v1/stream/`` through the
lean :class:`durable_streams.asgi.StreamsASGIApp` and everything else (the
admin, the API) through Django. ``django_application`` serves the streams
through the URLconf (``include("durable_streams.urls")``) and the full
middleware stack instead, wrapped in
:class:`durable_streams.targets.OriginFormMiddleware` so that absolute-form
request targets (``POST http://host/v1/stream/x``) reach Django as their path
(the lean app does that itself); the test suite runs the protocol against both.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
# Set up Django (and the database settings) before importing anything that
# touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from durable_streams.asgi import StreamsASGIApp  # noqa: E402
from durable_streams.targets import OriginFormMiddleware  # noqa: E402

application = ProtocolTypeRouter({"http": StreamsASGIApp(django_asgi_app, prefix="/v1/stream/")})
django_application = ProtocolTypeRouter({"http": OriginFormMiddleware(django_asgi_app)})
