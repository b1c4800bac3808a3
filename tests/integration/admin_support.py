"""Running `lotlens-admin` as an operator does: its own process (`python -m lotlens_admin`), the
services' environment pointed at the test's broker, database and topics, stdout and stderr kept
apart (librdkafka's lines land on the process's stderr, which an in-process call does not see)."""

from __future__ import annotations

import os
import subprocess
import sys

from lotlens_common.settings import TopicSettings
from tests.conftest import ROOT

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
