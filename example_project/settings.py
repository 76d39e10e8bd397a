"""Settings of the example project.

The database comes from ``DATABASE_URL``; without it, an embedded PostgreSQL
server is started in ``.data/pg`` inside the checkout (see
``example_project/embedded.py``).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Django 6 checks that apps using ArrayField (the stream tables) have it.
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "durable_streams",
    "example_project.sessions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under daphne, DEBUG or not (no collectstatic).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Stamps each request's X-Txid on the State Protocol events it causes.
    "durable_streams.state.TxidMiddleware",
]

ROOT_URLCONF = "example_project.urls"
ASGI_APPLICATION = "example_project.asgi.application"
# What runserver serves when daphne is not installed (tests/acceptance/test_wsgi.py).
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's own pages; the stream admin's templates come with the
        # durable_streams package (APP_DIRS), as in any project that installs it.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if os.environ.get("DATABASE_URL"):
    _database = dj_database_url.parse(
        os.environ["DATABASE_URL"], conn_max_age=600, conn_health_checks=True
    )
else:
    from .embedded import ensure_embedded_postgres

    _database = ensure_embedded_postgres(BASE_DIR / ".data" / "pg")
# Persistent connections for the project's own (admin, API) requests; the
# stream data path keeps its connections on its own threads anyway.
_database.setdefault("CONN_MAX_AGE", 600)
_database.setdefault("CONN_HEALTH_CHECKS", True)
DATABASES = {"default": _database}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
LOGIN_URL = "sessions:login"
LOGIN_REDIRECT_URL = "sessions:list"
WHITENOISE_USE_FINDERS = True

DURABLE_STREAMS = {
    "LONG_POLL_TIMEOUT": float(os.environ.get("LONG_POLL_TIMEOUT", "30")),
    # Session streams (sessions/<uuid>) are read by their members only; every
    # other stream is a demo: anyone may create, write, read and delete it. A
    # real project names its own policy or DRF_RULES (README, "Access control").
    "POLICY": "example_project.sessions.policy.SessionsPolicy",
    # Webhooks to localhost over http: WEBHOOK_ALLOW_LOCALHOST=1 allows, 0 refuses,
    # unset follows DEBUG (the conformance run has DEBUG off and a local receiver).
    "WEBHOOK_ALLOW_LOCALHOST": {"1": True, "0": False}.get(
        os.environ.get("WEBHOOK_ALLOW_LOCALHOST", "")
    ),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"durable_streams": {"handlers": ["console"], "level": "INFO"}},
}
