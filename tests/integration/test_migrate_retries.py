"""`python -m lotlens_common.migrate`, compose's one-shot `migrate` (`restart: "no"`): PostgreSQL
not reachable yet when it starts is waited for, not a failed `docker compose up`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx2
import pytest

from chaos.network import Toxiproxy, toxiproxy_binary
from lotlens_common.settings import KafkaSettings
from tests.conftest import ROOT, Infra, delete_topics, new_id
from tests.servers import free_port

pytestmark = pytest.mark.integration


def test_migrate_waits_for_a_database_that_is_not_reachable_yet(infra: Infra, tmp_path: Path) -> None:
    # Compose starts it once both containers report healthy; PostgreSQL restarting after its init
    # scripts (or a network not up yet) refused the first connection, migrate exited 1 and every
    # service, waiting on its success, never started. Old failure: exit code 1 after 0.6 s.
    proxy = Toxiproxy(toxiproxy_binary(ROOT), tmp_path / "toxiproxy.log")
    proxy.start()
    database = urlsplit(infra.database_url)
    port = free_port()
    body = {"name": "postgres", "listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{database.port}",
            "enabled": False}
    prefix = new_id("mr")
    names = {f"LOTLENS_TOPIC_{n.upper()}": f"{prefix}.{n}" for n in
             ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}
    try:
        httpx2.post(f"{proxy.api}/proxies", json=body, timeout=10).raise_for_status()
        netloc = database.netloc.replace(f":{database.port}", f":{port}")
        env = {**os.environ, **names, "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
               "DATABASE_URL": urlunsplit(database._replace(netloc=netloc)), "LOTLENS_TOPIC_PARTITIONS": "1"}
        job = subprocess.Popen([sys.executable, "-m", "lotlens_common.migrate", "--retry-interval", "1"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(4)
        assert job.poll() is None, (job.stdout.read() if job.stdout else b"").decode()
        httpx2.post(f"{proxy.api}/proxies/postgres", json={"enabled": True}, timeout=10).raise_for_status()
        assert job.wait(timeout=120) == 0, (job.stdout.read() if job.stdout else b"").decode()
        assert b"not reachable yet" in (job.stdout.read() if job.stdout else b"")
    finally:
        proxy.stop()
        delete_topics(KafkaSettings(bootstrap_servers=infra.kafka_bootstrap), list(names.values()))


def test_migrate_fails_at_once_on_a_refusal_no_wait_mends(infra: Infra) -> None:
    # Every OperationalError was waited out: a wrong password logged "not reachable yet" for the
    # whole 120 s before migrate failed.
    database = urlsplit(infra.database_url)
    netloc = f"{database.username}:wrong-password@{database.hostname}:{database.port}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
           "DATABASE_URL": urlunsplit(database._replace(netloc=netloc))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lotlens_common.migrate", "--retry-for", "120",
                           "--retry-interval", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "password authentication failed" in done.stderr
    assert "not reachable yet" not in done.stderr
    assert time.monotonic() - started < 30
