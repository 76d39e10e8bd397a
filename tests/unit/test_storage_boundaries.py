"""The storage package stays below the HTTP layer: it never imports the views
(nor anything else that depends on requests), so every caller can use it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import durable_streams.storage

PACKAGE = Path(durable_streams.storage.__file__).parent
# What storage may build on: settings, value rules, the models, and itself.
ALLOWED = {"conf", "content", "exceptions", "models", "offsets", "producers", "storage"}


def imported_modules(path: Path) -> set[str]:
    """The durable_streams modules a storage module imports, relative names resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level == 1:
                names = ["durable_streams.storage." + (node.module or "")]
            else:
                names = ["durable_streams." + (node.module or "")]
                if not node.module:
                    names = ["durable_streams." + alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n.rstrip(".") for n in names if n.startswith("durable_streams"))
    return found


def test_storage_modules_import_no_views_nor_other_request_layers():
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        for name in imported_modules(path):
            top = name.split(".")[1] if "." in name else name
            assert top in ALLOWED, f"{path.name} imports {name}"
            assert "views" not in name


def test_the_boundary_check_sees_a_views_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .. import views\nfrom ..live import watch\n")
    assert imported_modules(sample) == {"durable_streams.views", "durable_streams.live"}


def test_a_checked_path_is_not_checked_again():
    from durable_streams.storage import streams

    checked = streams.check_path("a/b")
    assert isinstance(checked, streams.StreamPath)
    assert streams.check_path(checked) is checked


@pytest.mark.parametrize("bad", ["", "a/../b", "a/./b", "a\x00b", "x" * 1025])
def test_check_path_refuses_what_no_stream_may_have(bad):
    from durable_streams.exceptions import BadRequest
    from durable_streams.storage import streams

    with pytest.raises(BadRequest):
        streams.check_path(bad)
