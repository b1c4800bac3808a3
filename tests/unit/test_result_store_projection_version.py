"""The projection version is a digest of exactly the code that shapes the read models' rows: an edit
to it means another version (a shadow is not resumed), an edit elsewhere does not (it is)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from lotlens_result_store import shadow_state
from lotlens_result_store.shadow_state import NOT_PROJECTION, PROJECTION_MODULES, projection_version

OURS = ("lotlens_common", "lotlens_result_store")


def source_of(module: str) -> Path:
    return Path(str(importlib.import_module(module).__file__))


def version_with_edit(monkeypatch: pytest.MonkeyPatch, module: str) -> str:
    """The projection version were `module`'s file one comment longer."""
    edited = source_of(module)
    read_bytes = Path.read_bytes

    def read(path: Path) -> bytes:
        return read_bytes(path) + (b"\n# edited\n" if path == edited else b"")

    monkeypatch.setattr(Path, "read_bytes", read)
    try:
        return projection_version()
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("module", ["lotlens_common.model.usage", "lotlens_common.tables",
                                    "lotlens_common.events", "lotlens_result_store.projections"])
def test_editing_a_module_that_shapes_rows_is_another_projection_version(
        monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    # JobUsage.of writes jobs.usage and tables.py names the columns: neither was in the digest, so
    # a rebuild resumed a shadow whose rows the old code had shaped.
    assert version_with_edit(monkeypatch, module) != projection_version()


@pytest.mark.parametrize("module", ["lotlens_result_store.rebuild", "lotlens_result_store.shadow_state",
                                    "lotlens_result_store.__main__", "lotlens_result_store.config",
                                    "lotlens_result_store.metrics"])
def test_editing_code_that_shapes_no_row_keeps_the_projection_version(
        monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    # Every file of the package was hashed: a fix to the rebuild's own progress lines forced --restart.
    assert version_with_edit(monkeypatch, module) == projection_version()


def imported(module: str) -> set[str]:
    """The LotLens modules `module` imports, wherever in it (function bodies too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source_of(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from package import module` names a module; `from module import name` the module.
            names = [f"{node.module}.{alias.name}" if is_module(f"{node.module}.{alias.name}")
                     else node.module for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in OURS and name not in OURS}
    return found


def is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_every_module_the_projection_code_imports_is_listed_or_excluded() -> None:
    # The list cannot rot silently: a new module the projection imports must be judged.
    unjudged = {f"{module} (imported by {by})" for by in PROJECTION_MODULES for module in imported(by)
                if module not in PROJECTION_MODULES and module not in NOT_PROJECTION}
    assert not unjudged, sorted(unjudged)
    assert not set(PROJECTION_MODULES) & NOT_PROJECTION.keys()
    # The rebuild replays through handlers.apply_batch, the live consumer's own projection.
    assert "lotlens_result_store.handlers" in PROJECTION_MODULES
    assert "lotlens_result_store.handlers" in imported("lotlens_result_store.replay")
    assert shadow_state.__name__ in NOT_PROJECTION
    package = source_of("lotlens_result_store").parent
    modules = {f"lotlens_result_store.{path.stem}" for path in package.glob("*.py")}
    # A new module of the package is judged too, even before anything listed imports it.
    assert not modules - {"lotlens_result_store.__init__"} - set(PROJECTION_MODULES) - NOT_PROJECTION.keys()
