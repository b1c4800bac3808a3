"""scripts/stack.py imported in a test, its state folder a temporary one and its outside world faked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT


def stack_module(monkeypatch: pytest.MonkeyPatch, state: Path) -> ModuleType:
    """scripts/stack.py imported afresh, with its state folder in `state` (nothing is started)."""
    monkeypatch.setenv("LOTLENS_STATE_DIR", str(state))
    spec = importlib.util.spec_from_file_location("stack_under_test", ROOT / "scripts" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def faked(stack: ModuleType, monkeypatch: pytest.MonkeyPatch, taken: set[int],
          healthy: bool = False) -> list[str]:
    """`up`'s outside world faked: `taken` ports held, the migration a no-op, processes recorded
    instead of started, the stand-in answering (everything when `healthy`); the names `up` would
    have started (not those it takes for running)."""
    started: list[str] = []

    def spawn(name: str, command: list[str], env: dict[str, str]) -> None:
        if not stack._alive(name):
            started.append(name)

    monkeypatch.setattr(stack, "_port_free", lambda port: port not in taken)
    monkeypatch.setattr(stack.subprocess, "run", lambda *args, **kwargs: None)
    monkeypatch.setattr(stack, "_spawn", spawn)
    monkeypatch.setattr(stack, "_wait_for", lambda url, seconds: healthy or "/_standin/" in url)
    return started
