"""Running the `lotlens` command against a test gateway, as a user's shell would (no tests here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.integration.gateway_support import Gateway


def lotlens(gateway: Gateway, *argv: str, key: str | None = None,
            encoding: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m lotlens_client.cli ARGV` with the gateway's URL and key in the environment; with
    `encoding`, its stdout and stderr are in that encoding (a Windows console or redirect, say) and
    read back strictly in it."""
    env = {**os.environ, "LOTLENS_URL": gateway.url, "LOTLENS_CLIENT_KEY": key or gateway.key}
    if encoding is not None:
        env["PYTHONIOENCODING"] = encoding
    return subprocess.run([sys.executable, "-m", "lotlens_client.cli", *argv], env=env, capture_output=True,
                          encoding=encoding or "utf-8", timeout=60, check=False)


def printed(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command that succeeded printed."""
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
