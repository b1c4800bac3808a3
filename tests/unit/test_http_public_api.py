"""The project's own code reaches httpx2/httpcore2 through their public API only.

The SSRF guard once subclassed httpx's transport and replaced its private `_pool`: an upgrade that
renamed it would have left the guard silently out of the path. This scan of libs/, services/ and
tools/ refuses, wherever it appears: a private module or name imported from either package
(`httpx2._config`), a private attribute of the packages themselves (`httpcore2._models`), a
private attribute that either package's objects use read or written on someone else's object
(`transport._pool`, `getattr(t, "_pool")`), and `self._x` in a subclass of one of their classes
when a base class in either package uses that `_x` itself (the old guard's `self._pool = ...`).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

import pytest

PACKAGES = frozenset({"httpx2", "httpcore2"})
ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("libs", "services", "tools")
_SELF_PRIVATE = re.compile(r"\bself\.(_[A-Za-z]\w*)")


def private(name: str) -> bool:
    """A single-underscore name (dunders like __init__ are public protocol)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@cache
def package_private_attributes() -> frozenset[str]:
    """Every `self._x` either package's source uses: the private state of their objects."""
    names: set[str] = set()
    for package in PACKAGES:
        folder = Path(importlib.import_module(package).__file__ or "").parent
        for path in folder.rglob("*.py"):
            names.update(_SELF_PRIVATE.findall(path.read_text(encoding="utf-8")))
    return frozenset(names)


def base_private_attributes(base: type) -> set[str]:
    """The `self._x` names the classes of `base`'s MRO that live in either package use."""
    names: set[str] = set()
    for klass in base.__mro__:
        if klass.__module__.split(".")[0] not in PACKAGES:
            continue
        # Method by method: both packages set `__module__` to the package, so the class's own
        # source cannot be looked up, but each function knows its file and lines.
        for member in vars(klass).values():
            function = member.fget if isinstance(member, property) else member
            if inspect.isfunction(function):
                names.update(_SELF_PRIVATE.findall(inspect.getsource(function)))
    return names


def violations(source: str) -> list[str]:
    """Each use of httpx2/httpcore2 internals in a module's source, as 'line N: what'."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> package  (`import httpx2 as h`)
    names: dict[str, tuple[str, str]] = {}  # local name -> (package, name)  (`from httpx2 import X`)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, *rest = alias.name.split(".")
                if top in PACKAGES:
                    if any(private(part) for part in rest):
                        found.append(f"line {node.lineno}: imports private module {alias.name}")
                    modules[alias.asname or top] = top
        elif isinstance(node, ast.ImportFrom) and node.module:
            top, *rest = node.module.split(".")
            if top in PACKAGES:
                for alias in node.names:
                    if any(private(part) for part in rest) or private(alias.name):
                        found.append(f"line {node.lineno}: imports {alias.name} from {node.module}")
                    names[alias.asname or alias.name] = (top, alias.name)
    for node in ast.walk(tree):
        found.extend(_attribute_use(node, modules))
        if isinstance(node, ast.ClassDef):
            found.extend(_subclass_use(node, modules, names))
    return found


def _attribute_use(node: ast.AST, modules: dict[str, str]) -> list[str]:
    if isinstance(node, ast.Attribute) and private(node.attr):
        owner = node.value.id if isinstance(node.value, ast.Name) else None
        if owner in modules:
            return [f"line {node.lineno}: private {owner}.{node.attr}"]
        if owner not in ("self", "cls") and node.attr in package_private_attributes():
            return [f"line {node.lineno}: another object's {node.attr}, private state of httpx2/httpcore2"]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in package_private_attributes()):
        return [f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})"]
    return []


def _subclass_use(cls: ast.ClassDef, modules: dict[str, str],
                  names: dict[str, tuple[str, str]]) -> list[str]:
    taken: set[str] = set()
    for base in cls.bases:
        if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id in modules:
            klass = getattr(importlib.import_module(modules[base.value.id]), base.attr)
        elif isinstance(base, ast.Name) and base.id in names:
            package, name = names[base.id]
            klass = getattr(importlib.import_module(package), name)
        else:
            continue
        taken |= base_private_attributes(klass)
    return [f"line {node.lineno}: {cls.name} sets or reads its base class's private self.{node.attr}"
            for node in ast.walk(cls)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "self" and node.attr in taken]


def project_sources() -> list[Path]:
    """Every Python file of the project's libraries, services and tools."""
    return sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py")
                  if "node_modules" not in path.parts)


def test_project_code_uses_only_the_public_api_of_httpx2_and_httpcore2() -> None:
    sources = project_sources()
    assert any(path.name == "pool_transport.py" for path in sources)  # the scan sees the guard
    found = {str(path.relative_to(ROOT)): hits for path in sources
             if (hits := violations(path.read_text(encoding="utf-8")))}
    assert found == {}


@pytest.mark.parametrize("source", [
    "from httpx2._config import DEFAULT_LIMITS",
    "import httpcore2._backends.sync",
    "from httpcore2 import _models",
    "import httpx2 as h\nparse = h._urlparse",
    # What the guard did before: rebuild the private pool of httpx's own transport.
    "import httpx2\nclass T(httpx2.AsyncHTTPTransport):\n    def __init__(self):\n"
    "        self._pool = None",
    "from httpx2 import HTTPTransport as Base\nclass T(Base):\n    def close(self):\n"
    "        self._pool.close()",
    "def pool_of(transport):\n    return transport._pool",
    "def pool_of(transport):\n    return getattr(transport, '_pool')",
])
def test_the_scan_refuses_internals(source: str) -> None:
    assert violations(source), source


@pytest.mark.parametrize("source", [
    "import httpcore2\nclass B(httpcore2.AsyncNetworkBackend):\n    def __init__(self):\n"
    "        self._resolve = 1",
    "import httpx2\nclass T(httpx2.BaseTransport):\n    def __init__(self, pool):\n        self.pool = pool",
    "import httpx2\nlimits = httpx2.Limits(max_connections=4).max_connections",
    "class Mine:\n    def __init__(self):\n        self._pool = 1",
])
def test_the_scan_lets_public_use_and_own_private_state_through(source: str) -> None:
    assert violations(source) == []
