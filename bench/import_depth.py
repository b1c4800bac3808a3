"""The longest chain of intra-package imports in a package (its "import floors").

Usage: python bench/import_depth.py libs/common/src/lotlens_common/stage lotlens_common.stage
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path


def module_imports(root: Path, package: str) -> dict[str, set[str]]:
    """module name -> the modules of the same package it imports."""
    modules = {
        ".".join([package, *path.relative_to(root).with_suffix("").parts]).removesuffix(".__init__"): path
        for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest import chain (the graph has no cycles: Python would refuse them at run time)."""

    @cache
    def chain(name: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for target in graph[name]:
            candidate = chain(target)
            if len(candidate) > len(best):
                best = candidate
        return (name, *best)

    longest: tuple[str, ...] = ()
    for name in graph:
        if len(chain(name)) > len(longest):
            longest = chain(name)
    return list(longest)


if __name__ == "__main__":
    imports = module_imports(Path(sys.argv[1]), sys.argv[2])
    longest = longest_chain(imports)
    lines = sum(len(path.read_text().splitlines()) for path in Path(sys.argv[1]).rglob("*.py"))
    print(f"{len(imports)} modules, {lines} lines, longest import chain {len(longest)} modules:")
    print("  " + " -> ".join(m.removeprefix(sys.argv[2] + ".") for m in longest))
