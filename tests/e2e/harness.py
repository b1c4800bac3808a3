"""The whole LotLens stack as real processes, configured for one test (its own topics, groups, ports)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lotlens_common.settings import TopicSettings
from tests.conftest import ROOT, Infra
from tests.servers import free_port
from tests.stack_health import wait_healthy

SERVICES = ("result-store", "vision-batcher", "translator", "webhook-dispatcher", "gateway")


@dataclass
class Stack:
    """Processes of one test's stack; `kill`/`start` let a test crash and revive any of them."""

    infra: Infra
    topics: TopicSettings
    logs: Path
    database_url: str
    client_id: str = "e2e"
    client_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    gateway_port: int = field(default_factory=free_port)
    standin_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Each service's /metrics, /livez and /readyz port (and the gateway's detailed /health).
    ops_ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in SERVICES})
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def standin_url(self) -> str:
        """The OpenAI stand-in's base URL."""
        return f"http://127.0.0.1:{self.standin_port}"

    def env(self) -> dict[str, str]:
        """Environment every process of this stack gets."""
        topic_env = {f"LOTLENS_TOPIC_{name.upper()}": getattr(self.topics, name) for name in
                     ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}
        return {
            **os.environ,
            **topic_env,
            "KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka_bootstrap,
            "DATABASE_URL": self.database_url,
            "KAFKA_GROUP_PREFIX": f"{self.topics.submissions}.",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_CONSUME_BATCH_TIMEOUT_S": "0.05",
            "LOTLENS_CLIENTS": json.dumps({self.client_id: self.client_key}),
            "LOTLENS_ALLOW_LOOPBACK_URLS": "true",
            "LOTLENS_GATEWAY_PORT": str(self.gateway_port),
            "LOTLENS_STAGE__WINDOW_S": "0.5",
            "LOTLENS_STAGE__POLL_INTERVAL_S": "0.3",
            "LOTLENS_WEBHOOK_RETRY_INTERVALS_S": "[0.5, 1, 2, 4]",
            "OPENAI_API_KEY": "e2e-standin",
            "OPENAI_BASE_URL": f"{self.standin_url}/v1",
            "STANDIN_PORT": str(self.standin_port),
            "STANDIN_VALIDATING_SECONDS": "0.1",
            "STANDIN_IN_PROGRESS_SECONDS": "0.5",
            "STANDIN_FINALIZING_SECONDS": "0.1",
            **self.extra_env,
        }

    def start(self, name: str, **env: str) -> None:
        """Start one process (a service, or `openai-standin`)."""
        module = "lotlens_" + name.replace("-", "_")
        log = (self.logs / f"{name}.log").open("ab")
        own = {"LOTLENS_METRICS_PORT": str(self.ops_ports[name])} if name in self.ops_ports else {}
        # Static membership, as `make up` runs it: a restarted consumer rejoins under its name.
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT,
            env={**self.env(), "KAFKA_GROUP_INSTANCE_ID": name, **own, **env},
            stdout=log, stderr=subprocess.STDOUT)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Stop one process abruptly (SIGKILL) or gracefully (SIGTERM)."""
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(timeout=30)

    def up(self) -> None:
        """Start the stand-in and the five services; wait for the gateway."""
        self.start("openai-standin")
        for name in SERVICES:
            self.start(name)
        wait_healthy(self.url, self.processes, self.log_tail)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of a process's log, for failure messages."""
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def down(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL)."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
