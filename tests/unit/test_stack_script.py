"""`scripts/stack.py down` stops only what `up` started: a pid file left by a reboot or a crash
may name a process that reused the pid."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_down_leaves_a_process_that_reused_a_services_pid_alone(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # leads its own group
    follower = subprocess.Popen(["sleep", "60"])  # in the test's group: no group of its own
    try:
        run = tmp_path / "run"
        run.mkdir()
        (run / "gateway.pid").write_text(str(stranger.pid))
        (run / "translator.pid").write_text(str(follower.pid))
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "stack.py"), "down"],
                              env={**os.environ, "LOTLENS_STATE_DIR": str(tmp_path)},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert stranger.poll() is None and follower.poll() is None, "down killed a process it never started"
        assert list(run.iterdir()) == []
    finally:
        stranger.kill()
        follower.kill()


def test_up_refuses_a_port_another_program_holds_before_starting_anything(tmp_path: Path) -> None:
    # A new user whose port 18000 was taken saw "the gateway did not become healthy" after 90 s,
    # or, when the holder answered /health, "LotLens is up" about some other program.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "stack.py"), "up"],
                              env={**os.environ, "LOTLENS_STATE_DIR": str(tmp_path),
                                   "LOTLENS_GATEWAY_PORT": str(port)},
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "port(s) in use by another program: " in done.stderr, done.stderr
    assert f"{port} (gateway)" in done.stderr, done.stderr
    assert list((tmp_path / "run").iterdir()) == [], "it started processes anyway"
