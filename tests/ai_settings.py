"""Test settings with the AI endpoints mounted (tests/ai_urls.py): the example
chat endpoints, the durable proxy and the resumable test views (tests/aiapp).

The proxy's upstream allowlist and timeouts come from the environment, so each
test module's daphne server can have its own.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DURABLE_STREAMS as _BASE

PROXY_TEST_SECRET = "proxy-test-secret-4f1c9a7e2b"

DURABLE_STREAMS = {
    **_BASE,
    "PROXY_SECRET": PROXY_TEST_SECRET,
    "PROXY_ALLOWED_UPSTREAMS": [
        u for u in os.environ.get("DS_TEST_PROXY_UPSTREAMS", "").split(",") if u
    ],
    # The test upstream listens on loopback (the SSRF development exception).
    "PROXY_ALLOW_LOCALHOST": os.environ.get("DS_TEST_PROXY_ALLOW_LOCALHOST", "1") == "1",
    "PROXY_HEADER_TIMEOUT": float(os.environ.get("DS_TEST_PROXY_HEADER_TIMEOUT", "60")),
    "PROXY_IDLE_TIMEOUT": float(os.environ.get("DS_TEST_PROXY_IDLE_TIMEOUT", "600")),
    "PROXY_URL_EXPIRES": int(os.environ.get("DS_TEST_PROXY_URL_EXPIRES", "86400")),
}

ROOT_URLCONF = "tests.ai_urls"
