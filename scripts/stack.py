"""Start and stop the local LotLens stack: stand-in, example image server and the five services.

Kafka and PostgreSQL are managed by `scripts/infra.sh`; this script runs after it (see the
Makefile). Every process writes a pid file and a log under `.state/`, so `up` twice with the same
settings is harmless (with others it refuses: `make down` first) and `down` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("LOTLENS_STATE_DIR", ROOT / ".state"))
RUN, LOGS = STATE / "run", STATE / "logs"
GATEWAY_PORT = int(os.environ.get("LOTLENS_GATEWAY_PORT", "18000"))
STANDIN_PORT = int(os.environ.get("STANDIN_PORT", "18080"))
IMAGES_PORT = int(os.environ.get("LOTLENS_EXAMPLE_IMAGES_PORT", "18090"))
SERVICES = ["result-store", "vision-batcher", "translator", "webhook-dispatcher", "gateway"]
# The services' operations ports (/metrics, /livez, /readyz): this, plus the service's place above
# (the gateway's: 19104), plus 10 k for instance k > 1.
OPS_PORT_BASE = int(os.environ.get("LOTLENS_STACK_OPS_PORT", "19100"))
GATEWAY_OPS_PORT = OPS_PORT_BASE + SERVICES.index("gateway")
# More instances of a consumer, as a deployment scales it: "webhook-dispatcher=2,translator=2".
INSTANCES = dict(item.split("=") for item in os.environ.get("LOTLENS_STACK_INSTANCES", "").split(",") if item)
# Put into the environment of each process `up` starts, so `_alive` knows its own by something no
# other process has: a pid file left by a crash or a reboot may name any process that reused the
# pid, e.g. a PostgreSQL backend ("postgres: lotlens lotlens ...", a group of its own), which
# `down` killed and `up` took for a running result-store. The settings one says what it runs with.
STACK_MARK, SETTINGS_MARK = "LOTLENS_STACK_STATE", "LOTLENS_STACK_SETTINGS"
# The variables the processes read (the settings' prefixes in libs/common, the stand-in's port).
SETTING_PREFIXES = ("LOTLENS_", "OPENAI_", "KAFKA_", "DATABASE_", "STANDIN_", "OTEL_")
# The gateway refuses a shorter client key (services/gateway config.py MIN_KEY_CHARS).
MIN_KEY_CHARS = 32


def _demo_clients() -> str:
    """The local clients: one demo client whose key is made once and kept in the state folder,
    readable by its owner alone. Written whole or not at all: a key file a kill left empty made
    every later `make up` fail after 90 s (the gateway refused the key), so a short one is made
    again."""
    key_file = STATE / "demo-client-key"
    with contextlib.suppress(FileNotFoundError):
        key = key_file.read_text().strip()
        if len(key) >= MIN_KEY_CHARS:
            key_file.chmod(0o600)  # written 0644 by earlier releases
            return json.dumps({"demo": key})
    key = secrets.token_hex(24)
    partial = key_file.with_name(key_file.name + ".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as written:
        written.write(key)
        written.flush()
        os.fsync(written.fileno())
    os.chmod(partial, 0o600)  # O_CREAT's mode applies to a new file only
    os.replace(partial, key_file)
    return json.dumps({"demo": key})


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LOTLENS_CLIENTS", _demo_clients())
    # The example images and a developer's webhook receiver are on loopback (a model elsewhere
    # cannot fetch loopback images: the example job is not offered then, `_FIRST_JOB_ELSEWHERE`).
    env.setdefault("LOTLENS_ALLOW_LOOPBACK_URLS", "true")
    env.setdefault("LOTLENS_STAGE__WINDOW_S", "2")
    env.setdefault("LOTLENS_STAGE__POLL_INTERVAL_S", "1")
    env.setdefault("LOTLENS_GATEWAY_PORT", str(GATEWAY_PORT))
    # Where the services call without a key or base URL; a developer's own OPENAI_BASE_URL (a local
    # model server, with or without a key) is theirs: it was overwritten, and the stand-in's canned
    # descriptions came back as if their model had written them.
    env["OPENAI_STANDIN_URL"] = f"http://127.0.0.1:{STANDIN_PORT}/v1"
    return env


def _given(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())  # empty is unset, as the services read it


def _calls_standin() -> bool:
    """Whether the model calls go to the stand-in `up` starts: neither a key nor a server given."""
    return not (_given("OPENAI_API_KEY") or _given("OPENAI_BASE_URL"))


def _model_on_this_machine() -> bool:
    """Whether the model (which fetches each lot's images itself) can reach the example images on
    127.0.0.1: the stand-in, or a server given on loopback; not OpenAI, nor a server elsewhere."""
    if _calls_standin():
        return True
    host = (urllib.parse.urlsplit(os.environ.get("OPENAI_BASE_URL", "").strip()).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or no base URL (OpenAI)
        return False


def _settings(env: dict[str, str]) -> str:
    """What a process is started with, as `NAME:digest` pairs (values stay out of the file)."""
    return ",".join(f"{name}:{hashlib.sha256(value.encode()).hexdigest()[:16]}"
                    for name, value in sorted(env.items())
                    if name.startswith(SETTING_PREFIXES) and name not in (STACK_MARK, SETTINGS_MARK))


def _started_with(name: str) -> str | None:
    """The settings the process the pid file names was started with ("" when unknown), or None
    when it is not one `up` started here: pids get reused (a pid file left by a reboot or a crash
    named some other process, which `down` then killed, or whose group it failed to signal,
    leaving Kafka and PostgreSQL up)."""
    try:
        pid = int((RUN / f"{name}.pid").read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        leads_group = os.getpgid(pid) == pid
    except (OSError, ValueError):  # gone, or another user's (a PostgreSQL backend's, say)
        return None
    env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
    if env.get(STACK_MARK) == str(STATE):
        return env.get(SETTINGS_MARK, "")
    # Started by a stack.py before the mark: `python -m lotlens_<service>` or `-m http.server`.
    started_before = argv[1:2] == [b"-m"] and b"".join(argv[2:3]).startswith((b"lotlens_", b"http.server"))
    return "" if leads_group and started_before and STACK_MARK not in env else None


def _alive(name: str) -> bool:
    """Whether the pid file names a running process this script started."""
    return _started_with(name) is not None


def _changed_settings(planned: list[Process], env: dict[str, str]) -> list[str]:
    """The variables whose values differ from those the running processes were started with."""
    changed: set[str] = set()
    for process in planned:
        if was := _started_with(process.name):
            before = dict(pair.split(":", 1) for pair in was.split(",") if pair)
            now = dict(pair.split(":", 1) for pair in _settings({**env, **process.env}).split(",") if pair)
            changed |= {name for name in before.keys() | now.keys() if before.get(name) != now.get(name)}
    return sorted(changed)


def _spawn(name: str, command: list[str], env: dict[str, str]) -> None:
    if _alive(name):
        return
    log = (LOGS / f"{name}.log").open("ab")
    marked = {**env, STACK_MARK: str(STATE), SETTINGS_MARK: _settings(env)}
    process = subprocess.Popen(command, cwd=ROOT, env=marked, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    (RUN / f"{name}.pid").write_text(str(process.pid))


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Process:
    """One process `up` runs: its name (pid and log file), command, the ports it listens on (each
    with the variable that moves it) and its extra environment."""

    name: str
    command: list[str]
    ports: dict[int, str]
    env: dict[str, str] = field(default_factory=dict)


def _plan() -> list[Process]:
    """Every process `up` runs, in start order."""
    python = sys.executable
    planned = [Process("openai-standin", [python, "-m", "lotlens_openai_standin"],
                       {STANDIN_PORT: "STANDIN_PORT"})] if _calls_standin() else []
    if _model_on_this_machine():
        serve = ["-m", "http.server", str(IMAGES_PORT), "--bind", "127.0.0.1", "--directory"]
        planned.append(Process("example-images", [python, *serve, str(ROOT / "examples" / "images")],
                               {IMAGES_PORT: "LOTLENS_EXAMPLE_IMAGES_PORT"}))
    for number, service in enumerate(SERVICES):
        command = [python, "-m", "lotlens_" + service.replace("-", "_")]
        # Each service serves /metrics, /livez and /readyz on its own ops port (the gateway its
        # detailed /health too, apart from its API port); instance k > 1 of a service is named
        # `<service>-k` and serves on OPS_PORT_BASE + 10 k + number.
        for instance in range(1, int(INSTANCES.get(service, 1)) + 1):
            name = service if instance == 1 else f"{service}-{instance}"
            ops_port = OPS_PORT_BASE + number + (10 * instance if instance > 1 else 0)
            # Static membership: a consumer restarted after a crash rejoins under its name at once.
            env = {"KAFKA_GROUP_INSTANCE_ID": name, "LOTLENS_METRICS_PORT": str(ops_port)}
            ports = {ops_port: "LOTLENS_STACK_OPS_PORT"}
            if service == "gateway":
                ports = {GATEWAY_PORT: "LOTLENS_GATEWAY_PORT", **ports}
            planned.append(Process(name, command, ports, env))
    return planned


def _wait_for(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # OSError: not listening yet.
        # Bandit's B310 (file:/ or custom schemes) cannot happen: `up()` builds `url` from
        # http://127.0.0.1 and a port of its own.
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:  # nosec B310
            if answer.status == 200:
                return True
        time.sleep(0.5)
    return False


def up() -> None:
    """Start what is not running, wait for the stand-in's and the gateway's health, print how to
    use it. A port held by some other program stops it before anything starts: the services would
    exit at once, or worse, talk to that program (an older stand-in, another gateway)."""
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    env = _environment()
    planned = _plan()
    if changed := _changed_settings(planned, env):
        sys.exit(f"make up: the stack running in {STATE} was started with other settings (changed: "
                 + ", ".join(changed) + "); `make down` stops it, then `make up` starts it with these")
    taken = [f"{port} ({p.name}: {variable})" for p in planned if not _alive(p.name)
             for port, variable in p.ports.items() if not _port_free(port)]
    if taken:
        sys.exit("make up: port(s) in use by another program: " + ", ".join(taken)
                 + "; stop it, or move LotLens's with the variable named")
    subprocess.run([sys.executable, "-m", "lotlens_common.migrate"], cwd=ROOT, env=env, check=True)
    # What started stays running when a later step fails (its logs say why): say how to stop it.
    stop = "; what did start still runs: `make down` stops it"
    for process in planned:
        _spawn(process.name, process.command, {**env, **process.env})
        if process.name == "openai-standin" and not _wait_for(
                f"http://127.0.0.1:{STANDIN_PORT}/_standin/stats", 30):
            sys.exit(f"the OpenAI stand-in did not start; see {LOGS}/openai-standin.log{stop}")
    if not _wait_for(f"http://127.0.0.1:{GATEWAY_PORT}/health", 90):
        sys.exit(f"the gateway did not become healthy; see {LOGS}/gateway.log{stop}")
    if dead := [p.name for p in planned if not _alive(p.name)]:
        sys.exit(f"exited at start: {', '.join(dead)}; see their logs in {LOGS}{stop}")
    client_id, key = next(iter(json.loads(env["LOTLENS_CLIENTS"]).items()))
    print(f"""
LotLens is up.
  gateway:    http://127.0.0.1:{GATEWAY_PORT}   (OpenAPI: /openapi.json, health: /health)
  operations: http://127.0.0.1:{GATEWAY_OPS_PORT}   (gateway /metrics, detailed /health)
  console:    http://127.0.0.1:{GATEWAY_PORT}/console/
  client:     {client_id}
  client key: {key}
  logs:       {LOGS}
{_FIRST_JOB_ELSEWHERE if not _model_on_this_machine() else _FIRST_JOB.format(
    url=f"http://127.0.0.1:{GATEWAY_PORT}", key=key, job=_example_job())}""")


# The command names the gateway and the job file: with LOTLENS_GATEWAY_PORT or
# LOTLENS_EXAMPLE_IMAGES_PORT moved, the client's default URL and the images' port in
# examples/job.json were another program's.
_FIRST_JOB = """Submit the example job (3 lots, images served locally) and wait for it:
  LOTLENS_URL={url} LOTLENS_CLIENT_KEY={key} .venv/bin/lotlens submit {job} --wait
"""
EXAMPLE_JOB = "examples/job.json"
EXAMPLE_IMAGES_URL = "http://127.0.0.1:18090/"  # where examples/job.json's images are


def _example_job() -> str:
    """The example job to offer: examples/job.json, or, with the images on another port, a copy in
    the state folder whose image URLs name that port."""
    images_url = f"http://127.0.0.1:{IMAGES_PORT}/"
    if images_url == EXAMPLE_IMAGES_URL:
        return EXAMPLE_JOB
    moved = STATE / "example-job.json"
    moved.write_text((ROOT / EXAMPLE_JOB).read_text(encoding="utf-8").replace(EXAMPLE_IMAGES_URL, images_url),
                     encoding="utf-8")
    return str(moved)
# The model fetches each image itself: the example job's, on 127.0.0.1, would fail every lot (paid
# for its prompt) at OpenAI or a server elsewhere, so that stack has no example image server and
# offers no example job.
_FIRST_JOB_ELSEWHERE = """The model is not on this machine (OpenAI, or OPENAI_BASE_URL): submit lots whose
image URLs are public (https) ones it can fetch; examples/job.json's images are served on 127.0.0.1,
which it cannot reach.
"""


def down() -> None:
    """Stop every process this script started (SIGTERM, then SIGKILL after 20 s).

    Shorter than the pods' grace (60 s gateway and result-store, 120 s the stages and the
    dispatcher) on purpose: locally those drains rarely have anything to wait for, and a service
    cut short loses nothing (the outbox keeps unpublished events, a shard left `building` is
    recovered, handlers are idempotent: what kill -9 in `make chaos` checks); a developer's
    `make down` should not wait two minutes for a stage's upload to the stand-in.
    """
    extra = sorted(path.stem for path in RUN.glob("*-[0-9]*.pid"))
    names = ["gateway", *SERVICES[:-1], *extra, "example-images", "openai-standin"]
    for name in names:
        if _alive(name):
            os.killpg(int((RUN / f"{name}.pid").read_text()), signal.SIGTERM)
    deadline = time.monotonic() + 20
    for name in names:
        while _alive(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(name):
            os.killpg(int((RUN / f"{name}.pid").read_text()), signal.SIGKILL)
        (RUN / f"{name}.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    STATE.mkdir(parents=True, exist_ok=True)
    # One `up` or `down` at a time: two `make up` at once each started every service.
    with (STATE / ".stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        {"up": up, "down": down}[sys.argv[1]]()
