"""The whole stack for one chaos run, isolated like the bench's: its own state folder, ports,
Kafka broker (`tests/private_kafka.py`), consumer groups and database schema; two instances of each
consumer; faults applied to its processes, to its broker and to the database
(`scripts/infra.sh restart-pg`). With a `network`, every service reaches the broker, PostgreSQL
and the stand-in through a toxiproxy proxy: the broker advertises its proxy's address, so the
connections clients open after bootstrapping go through the proxy too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text

from chaos.network import Toxiproxy
from chaos.shutdown import Shutdown, grace_seconds
from lotlens_client import LotLensClient
from lotlens_common.db import make_engine, migrate
from lotlens_common.settings import DatabaseSettings, KafkaSettings, TopicSettings
from lotlens_common.topics import ensure_topics
from tests.private_kafka import PrivateKafka
from tests.servers import free_port
from tests.stack_health import wait_healthy

ROOT = Path(__file__).resolve().parents[1]
CONSUMERS = ("result-store", "vision-batcher", "translator", "webhook-dispatcher")
STANDIN_KEY = "chaos-standin"  # what the services send the stand-in as their OpenAI key
TOPIC_NAMES = ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")


class FaultNotFired(RuntimeError):
    """A fault could not be applied: what it was meant to hit had gone already."""


def service_of(name: str) -> str:
    """The service a process of the run runs (`vision-batcher-2` → `vision-batcher`)."""
    return name.rsplit("-", 1)[0] if name[-1].isdigit() else name


@dataclass
class ChaosStack:
    """One run's processes: `openai-standin`, `gateway` and `<consumer>-1`, `<consumer>-2`."""

    database_url: str
    state: Path
    name: str = field(default_factory=lambda: f"chaos{uuid.uuid4().hex[:8]}")
    client_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    probe_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    gateway_port: int = field(default_factory=free_port)
    standin_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Set: the services reach Kafka, PostgreSQL and the stand-in through its proxies (network faults).
    network: Toxiproxy | None = None
    kafka: PrivateKafka | None = None

    @property
    def kafka_bootstrap(self) -> str:
        """The run's broker, as every client (services and runner) reaches it."""
        if self.kafka is None:
            raise RuntimeError("the chaos stack's broker is not started")
        return self.kafka.bootstrap

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def standin_url(self) -> str:
        """The stand-in's base URL."""
        return f"http://127.0.0.1:{self.standin_port}"

    @property
    def topics(self) -> TopicSettings:
        """This run's topic names."""
        return TopicSettings.model_validate({n: f"{self.name}.{n}" for n in TOPIC_NAMES} | {"partitions": 6})

    @property
    def schema_url(self) -> str:
        """The database URL with this run's schema first on the search path."""
        return f"{self.database_url}?options=-csearch_path%3D{self.name}"

    def services_urls(self) -> tuple[str, str]:
        """(database URL, stand-in URL) as the services use them: through the proxies if any."""
        if self.network is None:
            return self.schema_url, self.standin_url
        database = make_url(self.database_url).set(port=self.network.ports["postgres"])
        return (
            f"{database.render_as_string(hide_password=False)}?options=-csearch_path%3D{self.name}",
            f"http://127.0.0.1:{self.network.ports['standin']}",
        )

    def client(self) -> LotLensClient:
        """The workload's client (the webhooks it asks for are signed with its key)."""
        return LotLensClient(self.url, self.client_key, timeout=60, max_retries=2)

    def probe_client(self) -> LotLensClient:
        """The recovery probe's client, a client of the gateway's own: the workload's jobs spend
        their client's rate limit (10 jobs a minute), and a probe refused with 429 waited out the
        Retry-After inside the recovery it measured (26 s reported for a 2 s recovery)."""
        return LotLensClient(self.url, self.probe_key, timeout=60, max_retries=2)

    def engine(self) -> Engine:
        """The runner's engine on this run's schema; it pings before each use, as its reads must
        outlive the PostgreSQL restarts it injects (the services' engines treat that error as transient)."""
        return create_engine(self.schema_url, pool_pre_ping=True)

    def env(self) -> dict[str, str]:
        """What every process of the run gets."""
        topics = self.topics
        database, standin = self.services_urls()
        return {
            **os.environ,
            **{f"LOTLENS_TOPIC_{n.upper()}": getattr(topics, n) for n in TOPIC_NAMES},
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "DATABASE_URL": database,
            "KAFKA_GROUP_PREFIX": f"{self.name}.",
            "KAFKA_CONSUME_BATCH_TIMEOUT_S": "0.05",
            "LOTLENS_CLIENTS": json.dumps({"chaos": self.client_key, "chaos-probe": self.probe_key}),
            "LOTLENS_ALLOW_LOOPBACK_URLS": "true",
            "LOTLENS_GATEWAY_PORT": str(self.gateway_port),
            "LOTLENS_METRICS_PORT": "0",
            "LOTLENS_STAGE__WINDOW_S": "0.5",
            "LOTLENS_STAGE__POLL_INTERVAL_S": "0.5",
            "LOTLENS_WEBHOOK_RETRY_INTERVALS_S": "[0.5, 1, 2, 4]",
            "LOTLENS_WEBHOOK_TIMEOUT_S": "2",
            "OPENAI_API_KEY": STANDIN_KEY,
            "OPENAI_BASE_URL": f"{standin}/v1",
            "STANDIN_PORT": str(self.standin_port),
            "STANDIN_STATE_DIR": str(self.state / "standin"),
            "STANDIN_VALIDATING_SECONDS": "0.2",
            "STANDIN_IN_PROGRESS_SECONDS": "1",
            "STANDIN_FINALIZING_SECONDS": "0.2",
        }

    def prepare(self) -> None:
        """Create this run's schema (migrated), in a state folder emptied first."""
        # A rerun of a seed starts clean: a stand-in reloading an earlier run's batches is no fresh stack.
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True, exist_ok=True)
        admin = make_engine(DatabaseSettings(DATABASE_URL=self.database_url), "chaos")
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.name}"'))
        admin.dispose()
        own = self.engine()
        migrate(own)
        own.dispose()

    def instances(self) -> list[str]:
        """Every service process name of the run."""
        return ["gateway", *(f"{c}-{i}" for c in CONSUMERS for i in (1, 2))]

    def start(self, name: str, settings: dict[str, str] | None = None) -> None:
        """Start one process by its run name (a consumer instance rejoins under that name), with
        `settings` (environment variables) on top of the run's."""
        service = service_of(name)
        log = (self.state / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "lotlens_" + service.replace("-", "_")],
            cwd=ROOT,
            env={**self.env(), "KAFKA_GROUP_INSTANCE_ID": name, **(settings or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, name: str, sig: int) -> None:
        """Send a signal to one process (SIGKILL also reaps it); FaultNotFired when it had ended
        already: Popen drops a signal to an ended process without a word, and the restart after
        it replaced the process, so its own crash went unreported too."""
        process = self.processes[name]
        if process.poll() is not None:
            raise FaultNotFired(f"{signal.Signals(sig).name} to {name} did not fire: it had exited "
                                f"{process.returncode} before: {self.log_tail(name)}")
        process.send_signal(sig)
        if sig == signal.SIGKILL:
            process.wait(timeout=30)

    def terminate(self, name: str) -> Shutdown:
        """SIGTERM to one process and wait for it to end, at most its service's grace period;
        past that it is killed, as the kubelet would."""
        process, service = self.processes[name], service_of(name)
        if process.poll() is not None:
            raise FaultNotFired(f"SIGTERM to {name} did not fire: it had exited {process.returncode} "
                                f"before: {self.log_tail(name)}")
        grace_s = grace_seconds(service)
        started = time.monotonic()
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            return Shutdown(name, service, grace_s, grace_s, None)
        return Shutdown(name, service, grace_s, time.monotonic() - started, process.returncode)

    def revive(self) -> list[str]:
        """Processes that ended by themselves (a fault's kill is followed by a restart at once),
        each started again so the run goes on with a whole stack."""
        ended = [name for name, process in self.processes.items() if process.poll() is not None]
        found = [f"{name} exited {self.processes[name].returncode}: {self.log_tail(name)}" for name in ended]
        for name in ended:
            self.start(name)
        return found

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of a process's log."""
        path = self.state / f"{name}.log"
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def up(self) -> None:
        """Start the broker (behind its proxy, if any), the stand-in and every service; wait for
        the gateway's health."""
        self.prepare()
        broker_port = free_port()
        advertised = None
        if self.network is not None:
            self.network.start()
            advertised = self.network.proxy("kafka", broker_port)
            self.network.proxy("postgres", make_url(self.database_url).port or 5432)
            self.network.proxy("standin", self.standin_port)
        self.kafka = PrivateKafka(self.state / "kafka", port=broker_port, advertised_port=advertised)
        self.kafka.start()
        ensure_topics(KafkaSettings(bootstrap_servers=self.kafka_bootstrap), self.topics)
        self.start("openai-standin")
        for name in self.instances():
            self.start(name)
        wait_healthy(self.url, self.processes, self.log_tail)

    def restart_kafka(self, down_s: float) -> None:
        """Stop the run's broker, wait, start it again on the same ports and data."""
        if self.kafka is not None:
            self.kafka.stop()
            time.sleep(down_s)
            self.kafka.start()

    def infra(self, command: str) -> None:
        """`scripts/infra.sh <command>` (restart-pg)."""
        subprocess.run(
            [str(ROOT / "scripts" / "infra.sh"), command],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def down(self) -> None:
        """Stop every process (SIGCONT first: a stopped one cannot handle SIGTERM)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        if self.kafka is not None:
            self.kafka.stop()
        if self.network is not None:
            self.network.stop()

    def drop(self) -> None:
        """Remove the run's schema and its broker's data."""
        admin = make_engine(DatabaseSettings(DATABASE_URL=self.database_url), "chaos")
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        admin.dispose()
        shutil.rmtree(self.state / "kafka", ignore_errors=True)
