"""WSGI entry point (gunicorn, uwsgi, mod_wsgi): the site as most Django
projects serve it. Non-live stream requests work here; live reads are refused
with 501 and served by an ASGI process beside it (docs/wsgi.md).

:class:`~durable_streams.targets.OriginFormWSGIMiddleware` serves absolute-form
request targets (``POST http://host/v1/stream/x``) under servers that pass the
whole URL on as ``PATH_INFO`` (``runserver``); gunicorn reduces them itself."""

import os

from django.core.wsgi import get_wsgi_application

from durable_streams.targets import OriginFormWSGIMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

application = OriginFormWSGIMiddleware(get_wsgi_application())
