"""WSGI entry point (gunicorn, uwsgi, mod_wsgi): the site as most Django
projects serve it. Non-live stream requests work here; live reads are refused
with 501 and served by an ASGI process beside it (docs/wsgi.md)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

application = get_wsgi_application()
