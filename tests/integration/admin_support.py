"""Running `lotlens-admin` as an operator does: its own process (`python -m lotlens_admin`), the
services' environment pointed at the test's broker, database and topics, stdout and stderr kept
apart (librdkafka's lines land on the process's stderr, which an in-process call does not see)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lotlens_common.settings import TopicSettings
from tests.conftest import ROOT

QUESTION = b"Type yes to do it: "

TOPIC_NAMES = ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")


# A broker that refuses every connection, and how long a command waits on it: the operator's
# `KAFKA_COMMAND_TIMEOUT_S` (default 10 s), short, since only the line and exit code are checked.
REFUSING_KAFKA = "127.0.0.1:1"
REFUSING_KAFKA_TIMEOUT_S = 2.0


def admin_env(kafka_bootstrap: str, database_url: str, topics: TopicSettings | None = None) -> dict[str, str]:
    """The environment the services read, aimed at this test's infrastructure (a refusing broker
    waited on for `REFUSING_KAFKA_TIMEOUT_S`)."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url}
    if kafka_bootstrap == REFUSING_KAFKA:
        env["KAFKA_COMMAND_TIMEOUT_S"] = str(REFUSING_KAFKA_TIMEOUT_S)
    if topics is not None:
        env.update({f"LOTLENS_TOPIC_{name.upper()}": getattr(topics, name) for name in TOPIC_NAMES})
    return env


def run_admin(env: dict[str, str], *argv: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    """One `lotlens-admin` command to its end."""
    # No terminal to ask on, as in a script: a destructive command needs its --yes.
    return subprocess.run([sys.executable, "-m", "lotlens_admin", *argv], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s,
                          check=False)


Answer = Callable[[bytes], subprocess.CompletedProcess[str]]


@contextmanager
def asking_on_a_terminal(env: dict[str, str], *argv: str, timeout_s: float = 90.0) -> Iterator[Answer]:
    """A destructive command run on a terminal (`kubectl exec -it`), from when it asks: the block
    does what happens while the operator reads the question, then answers (its stderr includes the
    question)."""
    operator, terminal = pty.openpty()
    asking = subprocess.Popen([sys.executable, "-m", "lotlens_admin", *argv], cwd=ROOT, env=env,
                              stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        asked = _read_until(asking, QUESTION, time.monotonic() + timeout_s)

        def answer(reply: bytes) -> subprocess.CompletedProcess[str]:
            os.write(operator, reply)
            out, err = asking.communicate(timeout=timeout_s)
            return subprocess.CompletedProcess(argv, asking.returncode, out.decode(), (asked + err).decode())

        yield answer
    finally:
        if asking.poll() is None:
            asking.kill()
            asking.communicate()
        os.close(operator)
        os.close(terminal)


def _read_until(process: subprocess.Popen[bytes], marker: bytes, deadline: float) -> bytes:
    assert process.stderr is not None
    said = b""
    while marker not in said:
        left = deadline - time.monotonic()
        assert left > 0 and process.poll() is None, f"it did not ask; exit {process.poll()}, stderr {said!r}"
        if select.select([process.stderr], [], [], min(left, 1.0))[0]:
            said += os.read(process.stderr.fileno(), 4096)
    return said
