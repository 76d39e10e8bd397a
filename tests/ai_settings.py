"""Test settings with the example AI chat endpoints mounted."""

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.ai_urls"
