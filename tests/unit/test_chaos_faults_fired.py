"""A process fault must hit a running process: one sent to a process that had already exited
(it crashed by itself) is reported, not counted as applied and then covered by the restart."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.stack import ChaosStack, FaultNotFired


def _stack(tmp_path: Path, command: list[str]) -> ChaosStack:
    stack = ChaosStack("postgresql://unused/db", tmp_path)
    (tmp_path / "gateway.log").write_text("boom: the gateway crashed\n")
    stack.processes["gateway"] = subprocess.Popen(command)
    return stack


def test_a_kill_9_of_a_process_that_had_exited_is_reported(tmp_path: Path) -> None:
    stack = _stack(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"])
    stack.processes["gateway"].wait(timeout=30)
    with pytest.raises(FaultNotFired, match="SIGKILL to gateway did not fire: it had exited 3 before: boom"):
        stack.signal("gateway", signal.SIGKILL)


def test_a_sigterm_of_a_process_that_had_exited_is_reported(tmp_path: Path) -> None:
    stack = _stack(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"])
    stack.processes["gateway"].wait(timeout=30)
    with pytest.raises(FaultNotFired, match="SIGTERM to gateway did not fire"):
        stack.terminate("gateway")


def test_a_kill_9_of_a_running_process_fires(tmp_path: Path) -> None:
    stack = _stack(tmp_path, [sys.executable, "-c", "import time; time.sleep(60)"])
    stack.signal("gateway", signal.SIGKILL)
    assert stack.processes["gateway"].returncode == -signal.SIGKILL
