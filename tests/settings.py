"""Settings of the test suite: the example project with short live-read timers.

The daphne servers the acceptance tests start import this module too, so a
few values can be changed per server through environment variables.
"""

import os

from example_project.settings import *  # noqa: F403

DURABLE_STREAMS = {
    "LONG_POLL_TIMEOUT": float(os.environ.get("DS_TEST_LONG_POLL_TIMEOUT", "2")),
    "SSE_MAX_DURATION": float(os.environ.get("DS_TEST_SSE_MAX_DURATION", "5")),
    "SSE_KEEPALIVE_INTERVAL": 1.0,
    # The servers run with DEBUG off, where the default policy refuses everything;
    # access tests pick their policy (tests/policies.py) per server.
    "POLICY": os.environ.get("DS_TEST_POLICY", "durable_streams.permissions.AllowAll"),
    # DS_TEST_ADMIN_READS=0: staff sessions get no read access of their own.
    "ADMIN_READS": os.environ.get("DS_TEST_ADMIN_READS", "1") == "1",
    "MAX_APPEND_SIZE": int(os.environ.get("DS_TEST_MAX_APPEND_SIZE", str(64 * 1024 * 1024))),
    # Chunking tests size their data for 1 MiB chunks (the default is 4 MiB):
    # a few MB then span several chunks without slowing the suite.
    "MAX_CHUNK_SIZE": 1024 * 1024,
    # Test webhook receivers listen on 127.0.0.1 over http, and the servers run
    # with DEBUG off (where loopback would be refused).
    "WEBHOOK_ALLOW_LOCALHOST": True,
}
# Settings some servers of tests/acceptance/test_http_settings.py,
# test_listener_outage.py and test_database_outage.py change.
if "DS_TEST_CORS_ALLOWED_ORIGINS" in os.environ:
    DURABLE_STREAMS["CORS_ALLOWED_ORIGINS"] = [
        o for o in os.environ["DS_TEST_CORS_ALLOWED_ORIGINS"].split(",") if o
    ]
if os.environ.get("DS_TEST_CORS_ALLOW_CREDENTIALS") == "1":
    DURABLE_STREAMS["CORS_ALLOW_CREDENTIALS"] = True
if "DS_TEST_CACHE_CONTROL" in os.environ:
    DURABLE_STREAMS["CACHE_CONTROL"] = os.environ["DS_TEST_CACHE_CONTROL"]
if "DS_TEST_FALLBACK_POLL_INTERVAL" in os.environ:
    DURABLE_STREAMS["FALLBACK_POLL_INTERVAL"] = float(os.environ["DS_TEST_FALLBACK_POLL_INTERVAL"])
if "DS_TEST_DB_POOL_TIMEOUT" in os.environ:
    DURABLE_STREAMS["DB_POOL_TIMEOUT"] = float(os.environ["DS_TEST_DB_POOL_TIMEOUT"])
if "DS_TEST_NOTIFY_CHANNEL" in os.environ:
    DURABLE_STREAMS["NOTIFY_CHANNEL"] = os.environ["DS_TEST_NOTIFY_CHANNEL"]
# DS_TEST_SHIPPED_CHUNK_SIZE=1: the shipped MAX_CHUNK_SIZE default (one server
# in tests/acceptance/test_http_protocol.py).
if os.environ.get("DS_TEST_SHIPPED_CHUNK_SIZE") == "1":
    del DURABLE_STREAMS["MAX_CHUNK_SIZE"]

# DS_TEST_WSGI_RUNSERVER=1: `manage.py runserver` serves WSGI, as in a project
# without daphne (tests/acceptance/test_wsgi.py).
if os.environ.get("DS_TEST_WSGI_RUNSERVER") == "1":
    INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "daphne"]  # noqa: F405

# Model change streams (durable_streams.state): a test app whose models stream
# their changes, its views, and the txid middleware.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.stateapp"]
if "durable_streams.state.TxidMiddleware" not in MIDDLEWARE:  # noqa: F405
    MIDDLEWARE = [*MIDDLEWARE, "durable_streams.state.TxidMiddleware"]  # noqa: F405
ROOT_URLCONF = "tests.stateapp.urls"

# Tests create and sign in many users: a fast hasher (never in production).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
