"""A Kafka broker of one test's own, to stop and start at will without disturbing other tests.

A single-node KRaft broker from the jars `scripts/infra.sh install` fetched, with its own state
directory and free ports. Its JVM loads its classes from an archive (AppCDS) the first broker of
these jars and this JDK wrote at its exit: without one a start took 3-10 s more under a full
run's load. Outage tests stop it (SIGTERM, then SIGKILL), wait, and start it again on the same
ports and data, as a broker restart in production would be. Given `advertised_port`
(a fault proxy's listening port in front of `port`), every client reaches the broker through that
port: clients bootstrap there and then connect to the advertised address, so a proxy in front of
a broker advertising its own port would be bypassed. Its controller traffic stays direct.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.polling import wait_for
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]

_TEMPLATE = ROOT / "deploy" / "local" / "kafka" / "server.properties.template"
_LOG4J = ROOT / "deploy" / "local" / "kafka" / "log4j2.properties"


# Watches a broker for the test process that started it, and kills the broker once that process
# is gone (its parent changes): a test process that died without its teardown (an abort inside
# librdkafka, kill -9) left its brokers running through later runs. Not prctl's PDEATHSIG: that
# fires when the starting *thread* ends, and some tests start a broker from a short-lived thread.
_WATCH = """
import os, signal, sys, time
owner, broker = int(sys.argv[1]), int(sys.argv[2])
while os.getppid() == owner:
    time.sleep(0.5)
    try:
        os.kill(broker, 0)
    except ProcessLookupError:  # exited and reaped: its number may be another process's soon
        sys.exit()
os.kill(broker, signal.SIGKILL)
"""


def _jars() -> Path:
    state = Path(os.environ.get("LOTLENS_STATE_DIR") or ROOT / ".state").resolve()
    lib = state / "kafka" / "lib"
    if not lib.is_dir():
        raise RuntimeError(f"no Kafka jars in {lib}: run scripts/infra.sh install")
    return lib


def class_archive(lib: Path) -> Path:
    """Where the class-data archive of a broker run from `lib` on this machine's JDK is kept (in
    the tools' cache, `scripts/tools.sh`); another JDK or other jars make another name."""
    java = Path(shutil.which("java") or "java").resolve()
    made = [str(lib), str(java), str(java.stat().st_mtime_ns) if java.exists() else "",
            *sorted(f"{jar.name}:{jar.stat().st_size}" for jar in lib.glob("*.jar"))]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lotlens-tools"
    folder = Path(os.environ.get("LOTLENS_TOOLS_DIR") or cache) / "kafka-cds"
    return folder / f"{hashlib.sha256(chr(10).join(made).encode()).hexdigest()[:16]}.jsa"


def cluster_id() -> str:
    """16 random bytes in URL-safe base64 without padding, as Kafka's `Uuid`, never starting with
    `-`: StorageTool would read such an id as an option and refuse to format (Kafka's own
    `Uuid.randomUuid` draws again for the same reason). One id in 64 did, and the test failed."""
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not made.startswith("-"):
            return made


@dataclass
class PrivateKafka:
    """One broker: `bootstrap` to connect, `stop`/`start` to take it away and bring it back."""

    directory: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    advertised_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    watcher: subprocess.Popen[bytes] | None = None
    # The archive this run's JVM writes at its exit, moved into place once it exited whole.
    dumping: Path | None = None

    @property
    def bootstrap(self) -> str:
        """host:port clients connect to (the advertised one)."""
        return f"127.0.0.1:{self.advertised_port or self.port}"

    def _java(self, *args: str) -> list[str]:
        archive = class_archive(_jars())
        if archive.exists():
            sharing = f"-XX:SharedArchiveFile={archive}"
        elif args[0] == "kafka.Kafka" and self.dumping is None:
            archive.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own: brokers of other test workers may be writing theirs meanwhile.
            self.dumping = archive.with_name(f"{archive.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            sharing = f"-XX:ArchiveClassesAtExit={self.dumping}"
        else:
            sharing = "-Xshare:auto"
        return ["java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true", sharing,
                f"-Dlog4j2.configurationFile={_LOG4J}", f"-Dkafka.logs.dir={self.directory / 'logs'}",
                "-cp", f"{_jars()}/*", *args]

    def _keep_archive(self, returncode: int) -> None:
        """Put the archive this broker's JVM wrote at a clean exit in place for the next ones (by a
        rename: a broker starting meanwhile reads a whole archive or none)."""
        dumped, self.dumping = self.dumping, None
        if dumped is None:
            return
        if returncode in (0, 128 + signal.SIGTERM) and dumped.exists() and dumped.stat().st_size:
            os.replace(dumped, class_archive(_jars()))
        else:  # killed, perhaps while writing it
            dumped.unlink(missing_ok=True)

    def _prepare(self) -> Path:
        config = self.directory / "server.properties"
        if config.exists():
            return config
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        template = _TEMPLATE.read_text()
        own = "advertised.listeners=PLAINTEXT://127.0.0.1:@KAFKA_PORT@"
        if own not in template:
            raise RuntimeError(f"{_TEMPLATE} no longer has the line {own!r} this broker rewrites")
        config.write_text(template
                          .replace(own, f"advertised.listeners=PLAINTEXT://{self.bootstrap}")
                          .replace("@KAFKA_PORT@", str(self.port))
                          .replace("@CONTROLLER_PORT@", str(self.controller_port))
                          .replace("@DATA_DIR@", str(self.directory / "data")))
        subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config)),
                       check=True, capture_output=True, timeout=120)
        return config

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the broker (formatting its storage the first time) and wait until it answers."""
        config = self._prepare()
        log = (self.directory / "logs" / "kafka.out").open("ab")
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.watcher = subprocess.Popen([sys.executable, "-c", _WATCH, str(os.getpid()),
                                         str(self.process.pid)])
        # Errors only: until the broker listens, each refused (or, behind a proxy, reset) attempt
        # would print a line.
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
        process = self.process

        def answering() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"private Kafka exited: see {self.directory / 'logs'}")
            with contextlib.suppress(Exception):  # not listening yet
                return bool(admin.list_topics(timeout=2).brokers)
            return False

        wait_for(answering, f"private Kafka to answer (its logs: {self.directory / 'logs'})",
                 timeout_s=timeout_s, every_s=0.5)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, SIGKILL after 30 s)."""
        if self.process is None:
            return
        self._unwatch()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self._keep_archive(self.process.returncode)
        self.process = None

    def kill(self) -> None:
        """Kill the broker (SIGKILL): a crash, its data left as it was."""
        assert self.process is not None
        self._unwatch()
        self.process.kill()
        self.process.wait(30)
        self.process = None

    def _unwatch(self) -> None:
        # First: once the broker is reaped, its pid can be another process's.
        if self.watcher is not None:
            self.watcher.kill()
            self.watcher.wait()
            self.watcher = None


@contextmanager
def private_kafka(directory: Path) -> Iterator[PrivateKafka]:
    """A started private broker in `directory`, stopped at the end."""
    broker = PrivateKafka(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
