"""The local stack as `make up` runs it (`scripts/stack.py`), started with the bench's env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2

from bench import namespace
from bench.config import ROOT, SERVICES, StackEnv, database_url, gateway, state_dir

STACK = ROOT / "scripts" / "stack.py"


def _stack(command: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(STACK), command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


def restart(stack_env: StackEnv) -> str:
    """Stop the default local stack and any earlier bench stack, then start the bench's own.

    `scripts/stack.py up` keeps a running stack as it is, so the bench first runs `down` (with
    the default env, then with its own). Its stack gets the isolation env (own state folder,
    ports, topics, consumer groups, fresh database) and the bench's overrides; this process's
    environment is updated too, so everything after talks to that stack. Returns the namespace.
    """
    name = namespace.new_name()
    _stack("down", dict(os.environ))
    isolation = stack_env.isolation(database_url(), name)
    _stack("down", {**os.environ, **isolation})
    namespace.recreate_database(database_url())
    os.environ.update(isolation)
    _stack("up", {**os.environ, **stack_env.overrides()})
    return name


def down() -> None:
    """Stop the stack this environment describes (`scripts/stack.py down`)."""
    _stack("down", dict(os.environ))


def is_up() -> bool:
    """True when the gateway answers /health with 200."""
    try:
        return httpx2.get(f"{gateway()}/health", timeout=5).status_code == 200
    except httpx2.HTTPError:
        return False


def client_key() -> str:
    """The demo client's shared key (`scripts/stack.py` writes it on first start)."""
    return (state_dir() / "demo-client-key").read_text().strip()


def pids() -> dict[str, int]:
    """service name -> pid, for the stack's processes that are running."""
    found: dict[str, int] = {}
    for name in SERVICES:
        pid_file = state_dir() / "run" / f"{name}.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if Path(f"/proc/{pid}").exists():
                found[name] = pid
    return found


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB (empty when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    wanted = {"VmRSS", "VmHWM"}
    return {
        key: int(value.split()[0])
        for key, _, value in (line.partition(":") for line in lines)
        if key in wanted
    }


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (`echo 5 > /proc/pid/clear_refs`, Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.2) -> bool:
    """Poll a zero-argument callable until it returns true or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return False


def profile(service: str, out: Path) -> None:
    """Replace a running service by the same command under `bench.sampler` (same env, same log).

    The new pid goes into the stack's pid file, so `scripts/stack.py down` stops it (SIGTERM: the
    service exits gracefully and the sampler writes `out`).
    """
    pid = pids()[service]
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    os.killpg(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30)
    module = "lotlens_" + service.replace("-", "_")
    with (state_dir() / "logs" / f"{service}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.sampler", str(out), module],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir() / "run" / f"{service}.pid").write_text(str(process.pid))
