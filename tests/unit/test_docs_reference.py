"""The reference pages of docs/ cover every setting and every system check.

docs/settings.md must have a row for each ``DURABLE_STREAMS`` key with its real
default, and docs/checks.md every check id the app can emit.
"""

import ast
import re
from pathlib import Path

import pytest

import durable_streams
from durable_streams.conf import DEFAULTS

DOCS = Path(__file__).resolve().parents[2] / "docs"
PACKAGE = Path(durable_streams.__file__).resolve().parent


def _settings_rows() -> dict[str, str]:
    """Key -> default column of the table in docs/settings.md."""
    rows = {}
    for line in (DOCS / "settings.md").read_text().splitlines():
        match = re.match(r"\| `([A-Z_]+)` \| `(.+?)` \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_settings_page_documents_the_key_with_its_default(key):
    rows = _settings_rows()
    assert key in rows, f"docs/settings.md has no row for {key}"
    assert ast.literal_eval(rows[key]) == DEFAULTS[key]


def test_checks_page_lists_every_check_id_the_app_emits():
    emitted = set()
    for source in PACKAGE.rglob("*.py"):
        emitted |= set(re.findall(r'id="(durable_streams\.[EWC]\d{3})"', source.read_text()))
    assert emitted, "no check ids found: the pattern no longer matches the code"
    documented = set(
        re.findall(r"`(durable_streams\.[EWC]\d{3})`", (DOCS / "checks.md").read_text())
    )
    assert emitted - documented == set(), "checks missing from docs/checks.md"
    assert documented - emitted == set(), "docs/checks.md lists checks the app lacks"
