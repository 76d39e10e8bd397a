"""System checks for configurations the app cannot work with."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import connections, router

from .conf import KEYS, ds_settings


@register(Tags.database, Tags.compatibility)
def check_database(app_configs=None, **kwargs) -> list:
    alias = ds_settings.DATABASE_ALIAS
    if alias not in settings.DATABASES:
        return [
            Error(
                f"DURABLE_STREAMS['DATABASE_ALIAS'] names {alias!r}, which is not in DATABASES.",
                id="durable_streams.E001",
            )
        ]
    vendor = connections[alias].vendor
    if vendor != "postgresql":
        return [
            Error(
                f"Durable Streams needs PostgreSQL; database {alias!r} is {vendor}.",
                hint=f"Point DATABASES[{alias!r}] at a PostgreSQL server (psycopg 3).",
                id="durable_streams.E002",
            )
        ]
    return []


@register(Tags.compatibility)
def check_asgi(app_configs=None, **kwargs) -> list:
    """E003: daphne's runserver is installed but has no ASGI_APPLICATION to run;
    W003: no ASGI_APPLICATION at all. Only daphne's and Channels' runserver read
    that setting: uvicorn and granian are given the application on their command
    line, so a missing setting is a hint, not an error that blocks ``migrate``."""
    from django.apps import apps

    if getattr(settings, "ASGI_APPLICATION", None):
        return []
    if apps.is_installed("daphne"):
        return [
            Error(
                "'daphne' is in INSTALLED_APPS, so runserver serves ASGI, but "
                "ASGI_APPLICATION is not set.",
                hint="Set ASGI_APPLICATION (e.g. 'myproject.asgi.application').",
                id="durable_streams.E003",
            )
        ]
    return [
        Warning(
            "ASGI_APPLICATION is not set: live reads (long-poll and SSE) need an ASGI "
            "server, and runserver without daphne serves WSGI.",
            hint="Serve the project with an ASGI server (daphne, uvicorn, granian: they take "
            "the application on their command line; silence this warning then), or add "
            "'daphne' to INSTALLED_APPS and set ASGI_APPLICATION for runserver.",
            id="durable_streams.W003",
        )
    ]


@register()
def check_settings(app_configs=None, **kwargs) -> list:
    """W001: an unknown key; E004: a number that is not positive; E005: any
    other value of the wrong type (every key of ``DURABLE_STREAMS`` is checked)."""
    if not ds_settings.is_mapping():
        return [
            Error(
                "DURABLE_STREAMS must be a dict.",
                hint="See the settings reference in the README; every key is optional.",
                id="durable_streams.E005",
            )
        ]
    problems = []
    for key in ds_settings.unknown_keys():
        problems.append(
            Warning(
                f"Unknown DURABLE_STREAMS setting {key!r}.",
                hint="Known keys: " + ", ".join(KEYS) + ".",
                id="durable_streams.W001",
            )
        )
    for problem in ds_settings.problems():
        if problem.numeric:
            problems.append(Error(str(problem), hint=problem.hint, id="durable_streams.E004"))
        else:
            problems.append(Error(str(problem), hint=problem.hint, id="durable_streams.E005"))
    return problems


@register(Tags.security)
def check_access_policy(app_configs=None, **kwargs) -> list:
    """E010: the policy cannot be loaded; W010: nothing configured with DEBUG off."""
    from .permissions import check_configuration

    return check_configuration()


@register(Tags.database)
def check_streamed_models(app_configs=None, **kwargs) -> list:
    """E020: a model registered for change streams is written to another database.

    Its events must commit in the same transaction as its rows, so both must
    live on ``DATABASE_ALIAS``.
    """
    from .state import registrations

    alias = ds_settings.DATABASE_ALIAS
    problems = []
    for model in {r.model for r in registrations()}:
        target = router.db_for_write(model)
        if target != alias:
            problems.append(
                Error(
                    f"{model._meta.label} is registered for change streams but written to "
                    f"database {target!r}; streams live on {alias!r}.",
                    hint="Events commit in the row's transaction, so route the model's "
                    "writes to DURABLE_STREAMS['DATABASE_ALIAS'] or unregister it.",
                    obj=model,
                    id="durable_streams.E020",
                )
            )
    return problems


@register(Tags.security)
def check_proxy(app_configs=None, **kwargs) -> list:
    """E030: an invalid proxy allowlist entry; E032: upstreams but no secret;
    W030: a secret shorter than 32 characters."""
    if not ds_settings.is_mapping():
        return []
    from .proxy.checks import check_proxy_settings

    return check_proxy_settings()
