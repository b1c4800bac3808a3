"""`scripts/stack.py down` stops only what `up` started: a pid file left by a reboot or a crash
may name a process that reused the pid."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lotlens_common.settings import OpenAISettings
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


def _model_url(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    """Where a service started with `env` sends its model calls."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_STANDIN_URL"):
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    return OpenAISettings().model_url()


def test_up_without_a_key_or_a_server_calls_the_stand_in_it_starts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", " ")  # compose's unset variable: empty
    monkeypatch.setenv("STANDIN_PORT", "18181")
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken=set(), healthy=True)
    monkeypatch.setattr(stack, "_alive", lambda name: name in started)
    stack.up()
    assert "openai-standin" in started and "example-images" in started, started
    assert _model_url(monkeypatch, stack._environment()) == "http://127.0.0.1:18181/v1"


def test_up_keeps_a_developers_own_model_server_given_without_a_key(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # OPENAI_BASE_URL without a key was replaced by the stand-in's: a developer's local model
    # server was never called, and the stand-in's canned descriptions came back as their model's.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken=set(), healthy=True)
    monkeypatch.setattr(stack, "_alive", lambda name: name in started)
    stack.up()
    assert "openai-standin" not in started, started
    assert "example-images" in started, "a local server can fetch the loopback example images"
    assert _model_url(monkeypatch, stack._environment()) == "http://127.0.0.1:9/v1"


def test_up_offers_a_command_that_reaches_its_gateway_and_images_on_moved_ports(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # With the ports moved, the command it printed sent the job to the client's default
    # http://127.0.0.1:18000, and examples/job.json's images were still on 18090: another program's.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("LOTLENS_GATEWAY_PORT", "18100")
    monkeypatch.setenv("LOTLENS_EXAMPLE_IMAGES_PORT", "18091")
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken=set(), healthy=True)
    monkeypatch.setattr(stack, "_alive", lambda name: name in started)
    stack.up()
    command = next(line for line in capsys.readouterr().out.splitlines() if "lotlens submit" in line)
    assert "LOTLENS_URL=http://127.0.0.1:18100 " in command, command
    job = json.loads(Path(command.split(" submit ")[1].split()[0]).read_text(encoding="utf-8"))
    urls = [image["url"] for lot in job["lots"] for image in lot["images"]]
    original = json.loads((ROOT / "examples" / "job.json").read_text(encoding="utf-8"))
    assert len(urls) == sum(len(lot["images"]) for lot in original["lots"]) > 0
    assert all(url.startswith("http://127.0.0.1:18091/") for url in urls), urls
    assert {k: v for k, v in job.items() if k != "lots"} == {k: v for k, v in original.items() if k != "lots"}


def test_up_on_the_default_ports_offers_the_example_job_as_it_is(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LOTLENS_GATEWAY_PORT", "LOTLENS_EXAMPLE_IMAGES_PORT"):
        monkeypatch.delenv(name, raising=False)
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken=set(), healthy=True)
    monkeypatch.setattr(stack, "_alive", lambda name: name in started)
    stack.up()
    assert ("LOTLENS_URL=http://127.0.0.1:18000 LOTLENS_CLIENT_KEY=" in capsys.readouterr().out
            and not (tmp_path / "example-job.json").exists())


@pytest.mark.parametrize(("base_url", "on_this_machine"), [
    ("https://llm.example/v1", False), ("http://10.1.2.3:8000/v1", False),
    ("http://localhost:11434/v1", True), ("http://[::1]:8000/v1", True)])
def test_up_offers_the_example_job_only_to_a_model_that_can_fetch_its_loopback_images(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        base_url: str, on_this_machine: bool) -> None:
    # With a model server elsewhere and no key, it served the example images on 127.0.0.1 and
    # offered the example job: the server fetches each image itself, and every lot failed.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    stack = stack_module(monkeypatch, tmp_path)
    started = faked(stack, monkeypatch, taken=set(), healthy=True)
    monkeypatch.setattr(stack, "_alive", lambda name: name in started)
    stack.up()
    printed = capsys.readouterr().out
    assert ("lotlens submit" in printed) is on_this_machine, printed
    assert ("example-images" in started) is on_this_machine, started
    assert "openai-standin" not in started
