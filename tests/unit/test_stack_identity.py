"""`scripts/stack.py` knows its own processes, and the settings they run with: a pid file left by a
crash or a reboot may name a PostgreSQL backend (its own group, "lotlens" in its title), and a
second `make up` with another OpenAI key must not report a stack still on the stand-in as up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import Engine, text

from tests.conftest import ROOT
from tests.polling import wait_for
from tests.unit.stack_support import faked, stack_module

# Stands in for a service: alive, of its own group, "lotlens" in its arguments like the real ones.
IDLE_SERVICE = [sys.executable, "-c", "import time; time.sleep(120)", "lotlens"]


def test_down_leaves_a_postgresql_backend_that_reused_a_services_pid_alone(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with engine.connect() as connection:
        backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        run = tmp_path / "run"
        run.mkdir()
        (run / "result-store.pid").write_text(str(backend))

        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "stack.py"), "down"],
                              env={**os.environ, "LOTLENS_STATE_DIR": str(tmp_path)},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert connection.execute(text("SELECT 1")).scalar_one() == 1, "down ended a PostgreSQL session"

        (run / "result-store.pid").write_text(str(backend))  # down removed it
        stack = stack_module(monkeypatch, tmp_path)
        started = faked(stack, monkeypatch, taken=set(), healthy=True)
        with pytest.raises(SystemExit, match="exited at start"):  # nothing really started
            stack.up()
        assert "result-store" in started, "up took the backend for a running result-store"


def _command_line(pid_file: Path) -> bytes:
    """What /proc holds of the command of the process whose pid the file holds (empty while it execs)."""
    return Path(f"/proc/{pid_file.read_text()}/cmdline").read_bytes()


@pytest.fixture()
def idle_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """A stack `up` started with the stand-in (no OPENAI_API_KEY), each process an idle one."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    stack = stack_module(monkeypatch, tmp_path)
    stack.RUN.mkdir(parents=True)
    stack.LOGS.mkdir(parents=True)
    environment = stack._environment()
    for process in stack._plan():
        stack._spawn(process.name, IDLE_SERVICE, {**environment, **process.env})
    for pid_file in stack.RUN.glob("*.pid"):  # a process reads empty while it execs
        wait_for(partial(_command_line, pid_file), f"{pid_file.stem} to exec", every_s=0.01)
    try:
        yield stack
    finally:
        for pid_file in stack.RUN.glob("*.pid"):
            os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def test_a_second_up_with_a_real_openai_key_refuses_a_stack_running_on_the_stand_in(
        idle_stack: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-real-one")
    started = faked(idle_stack, monkeypatch, taken=set(), healthy=True)
    with pytest.raises(SystemExit) as refused:
        idle_stack.up()
    assert "OPENAI_API_KEY" in str(refused.value), refused.value
    assert "make down" in str(refused.value), refused.value
    assert "sk-the-real-one" not in str(refused.value)
    assert started == []


def test_a_second_up_with_the_same_settings_keeps_the_running_stack(
        idle_stack: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    started = faked(idle_stack, monkeypatch, taken=set(), healthy=True)
    idle_stack.up()
    assert started == []
    assert "LotLens is up" in capsys.readouterr().out


def test_the_demo_client_key_is_private_to_its_owner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stack = stack_module(monkeypatch, tmp_path)
    stack._demo_clients()
    assert (tmp_path / "demo-client-key").stat().st_mode & 0o777 == 0o600


def test_a_demo_client_key_left_empty_by_a_kill_is_made_again(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `make up` failed after 90 s on every later run: the gateway refuses a key under 32 characters.
    (tmp_path / "demo-client-key").write_text("")
    stack = stack_module(monkeypatch, tmp_path)
    key = json.loads(stack._demo_clients())["demo"]
    assert len(key) >= 32, repr(key)
    assert (tmp_path / "demo-client-key").read_text().strip() == key
