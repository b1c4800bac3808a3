"""`scripts/stack.py down` stops only what `up` started: a pid file left by a reboot or a crash
may name a process that reused the pid."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unit.stack_support import faked, stack_module


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
    assert f"{port} (gateway: LOTLENS_GATEWAY_PORT)" in done.stderr, done.stderr
    assert list((tmp_path / "run").iterdir()) == [], "it started processes anyway"


def test_up_checks_every_port_it_will_listen_on_the_gateways_operations_port_too(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The gateway's ops port (19104) was not checked: held by another checkout's stack, every
    # process started, then the gateway died and `up` said only "did not become healthy".
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken={stack.GATEWAY_OPS_PORT})
    with pytest.raises(SystemExit) as refused:
        stack.up()
    assert f"{stack.GATEWAY_OPS_PORT} (gateway" in str(refused.value), refused.value
    assert "LOTLENS_STACK_OPS_PORT" in str(refused.value), refused.value
    assert started == [], "it started processes anyway"


def test_a_failed_up_says_that_what_did_start_is_still_running(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # It exited naming the gateway's log alone, with every process it had started left running.
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken=set())
    with pytest.raises(SystemExit) as failed:
        stack.up()
    assert started and "gateway" in started
    assert "make down" in str(failed.value), failed.value


def test_up_with_a_real_openai_key_offers_no_example_whose_images_openai_cannot_fetch(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It printed "Submit the example job (images served locally)": OpenAI fetches a lot's images
    # itself and cannot reach 127.0.0.1, so every lot of that job failed, paid for its prompt.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-real-one")
    monkeypatch.delenv("LOTLENS_ALLOW_LOOPBACK_URLS", raising=False)
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken=set(), healthy=True)
    monkeypatch.setattr(stack, "_alive", lambda name: name in started)
    stack.up()
    printed = capsys.readouterr().out
    assert "LotLens is up" in printed
    assert "submit examples/job.json" not in printed, printed
    assert "public" in printed, printed
    assert "example-images" not in started and "openai-standin" not in started, started
    # A developer's webhook receiver on loopback still works with the real key.
    assert stack._environment()["LOTLENS_ALLOW_LOOPBACK_URLS"] == "true"
