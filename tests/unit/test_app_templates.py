"""The stream admin's templates ship inside the package (issue 11, item 2).

A project that installs the app (wheel or ``pip install -e``) and follows the
installation page has no ``TEMPLATES["DIRS"]`` entry for them: Django's
app-directories loader must find every one inside ``durable_streams/``.
"""

from pathlib import Path

import pytest
from django.template.loader import get_template
from django.test import override_settings

import durable_streams

PACKAGE_TEMPLATES = Path(durable_streams.__file__).resolve().parent / "templates"
REPOSITORY = Path(__file__).resolve().parents[2]

# A startproject site's TEMPLATES setting: no DIRS, APP_DIRS on.
STARTPROJECT_TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

ADMIN_TEMPLATES = sorted(
    str(path.relative_to(PACKAGE_TEMPLATES)) for path in PACKAGE_TEMPLATES.rglob("*.html")
)


def test_the_package_holds_every_stream_admin_template():
    assert "admin/durable_streams/stream/change_list.html" in ADMIN_TEMPLATES
    assert "admin/durable_streams/stream/detail.html" in ADMIN_TEMPLATES
    # The repository's top-level templates/ is the example project's, not the app's.
    assert not (REPOSITORY / "templates" / "admin" / "durable_streams").exists()


@pytest.mark.parametrize("name", ADMIN_TEMPLATES)
@override_settings(TEMPLATES=STARTPROJECT_TEMPLATES)
def test_admin_template_loads_from_the_package_without_template_dirs(name):
    origin = Path(get_template(name).origin.name).resolve()
    assert origin == PACKAGE_TEMPLATES / name
