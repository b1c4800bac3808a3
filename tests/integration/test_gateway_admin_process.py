"""The gateway's Kafka admin calls run in child processes (`lotlens_gateway.admin_process`):
librdkafka can kill the process making them as a broker stops (confluentinc/librdkafka#4605, and a
segfault reading committed offsets), and made in the gateway, that took every request in flight
with it. A child that dies or hangs costs one reading, is counted and replaced; the children end
with the gateway, however it ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from confluent_kafka import Producer
from sqlalchemy import Engine

from lotlens_common.settings import KafkaSettings, ServiceSettings
from lotlens_gateway.admin_process import GRACE_S, AdminProcess, AdminProcessLost
from lotlens_gateway.group_lag import GroupLag, GroupLagCollector
from lotlens_gateway.health import read_health
from tests.conftest import ROOT, new_id
from tests.integration.admin_support import TOPIC_NAMES
from tests.integration.gateway_support import new_key, running_gateway
from tests.integration.kafka_admin_fakes import AbortsFirst, HangingAdmin
from tests.integration.test_gateway_group_lag import samples
from tests.polling import wait_for
from tests.private_kafka import private_kafka
from tests.servers import free_port

pytestmark = pytest.mark.integration

RESTARTS = 3


def test_an_admin_call_that_aborts_costs_the_gateway_one_health_reading_not_its_process(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    # In the gateway's own process the abort ended the process, the test run with it ("Fatal
    # Python error: Aborted" in health.py's _probe, exit 134): every request in flight was dropped.
    kafka = KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers,
                          group_prefix=new_id("abort-") + ".")
    aborts_first = AbortsFirst(tmp_path, kafka.client_config())
    with running_gateway(settings, engine, kafka=kafka, new_admin=aborts_first, health_cache_s=0) as gw:
        aborted = httpx2.get(f"{gw.ops_url}/health", timeout=30)
        assert aborted.status_code == 503 and aborted.json()["kafka"] == "disconnected", aborted.json()
        again = httpx2.get(f"{gw.ops_url}/health", timeout=30)
        text = httpx2.get(f"{gw.ops_url}/metrics", timeout=30).text
    # The next probe's new child reads the real broker: Kafka answers, the groups have no member.
    assert again.status_code == 200 and again.json()["kafka"] == "connected", again.json()
    assert again.json()["background_worker"] == "degraded", again.json()
    restarts = samples(text, "lotlens_kafka_admin_process_restarts_total")
    assert restarts == {(("reading", "health"),): 1, (("reading", "group_lag"),): 0}, restarts


def test_a_lag_reading_whose_admin_process_aborts_is_not_read_and_the_next_one_reads_the_broker(
        settings: ServiceSettings, tmp_path: Path) -> None:
    topic, group = settings.topics.vision, new_id("lag-") + ".lotlens-translator"
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for n in range(3):
        producer.produce(topic, value=f"event {n}".encode(), partition=0)
    assert producer.flush(30) == 0
    lost: list[int] = []
    admin = AdminProcess(AbortsFirst(tmp_path, settings.kafka.client_config()), lambda: lost.append(1))
    collector = GroupLagCollector(admin, {group: (topic,)}, cache_s=0.0)
    try:
        assert collector.groups() is None and lost == [1]  # `lotlens_kafka_group_lag_read` 0
        # A group that never committed lags by all of its topic's log.
        assert collector.groups() == {group: GroupLag(0, {topic: 3})}
        assert lost == [1]
    finally:
        admin.close()


def test_a_call_its_admin_process_does_not_answer_in_time_ends_that_process(tmp_path: Path) -> None:
    # librdkafka's calls end within their timeouts; one that did not would have held the probe for good.
    lost: list[int] = []
    admin = AdminProcess(HangingAdmin, lambda: lost.append(1))
    try:
        started = time.monotonic()
        with pytest.raises(AdminProcessLost, match="killed by SIGKILL as it had not answered in"):
            admin.run(read_health, ["vision"], "", 0.5, timeout_s=1.0)
        assert 1.0 + GRACE_S <= time.monotonic() - started < 1.0 + GRACE_S + 5, "not bounded by its time"
        assert lost == [1]
        with pytest.raises(AdminProcessLost, match="killed by SIGKILL"):  # a new child, hung again
            admin.run(read_health, ["vision"], "", 0.5, timeout_s=0.5)
        assert lost == [1, 1]
    finally:
        admin.close()


def test_the_gateway_reads_kafka_again_after_each_of_several_broker_restarts(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    # librdkafka 2.16.0 killed the process making the gateway's admin calls as a private broker
    # stopped: a segfault in rd_kafka_ListConsumerGroupOffsetsResponse_parse (the lag reading's
    # committed offsets) at the first stop, 3 runs of 3, and an abort (#4605) with the groups
    # described every 0.1 s (the health probe's calls, here every 0.1 s).
    with private_kafka(tmp_path / "kafka") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, group_prefix=new_id("restarts-") + ".")
        with running_gateway(settings, engine, kafka=kafka, health_cache_s=0) as gw:
            probes: list[str] = []
            with polled(lambda: probes.append(httpx2.get(f"{gw.ops_url}/health", timeout=30).json()["kafka"]),
                        0.1), polled(lambda: httpx2.get(f"{gw.ops_url}/metrics", timeout=30), 0.5):
                for restart in range(RESTARTS):
                    wait_for(lambda: probes[-1:] == ["connected"], f"Kafka back before restart {restart}",
                             timeout_s=60)
                    time.sleep(2)  # probed every 0.1 s, and the lag read, while it runs
                    broker.stop()
                    wait_for(lambda: probes[-1:] == ["disconnected"], "Kafka disconnected", timeout_s=30)
                    time.sleep(2)  # the calls pending as it stopped fail
                    broker.start()
                wait_for(lambda: probes[-1:] == ["connected"], "Kafka connected after the last restart",
                         timeout_s=60)
                read = lambda: samples(httpx2.get(f"{gw.ops_url}/metrics", timeout=30).text,  # noqa: E731
                                       "lotlens_kafka_group_lag_read") == {(): 1}
                wait_for(read, "the groups' lag read again", timeout_s=60, every_s=0.2)
            text = httpx2.get(f"{gw.ops_url}/metrics", timeout=30).text
    restarts = samples(text, "lotlens_kafka_admin_process_restarts_total")
    print(f"{len(probes)} health probes across {RESTARTS} broker restarts; admin processes replaced: "
          f"{restarts}")


@contextmanager
def polled(call: Callable[[], object], every_s: float) -> Iterator[None]:
    """`call` every `every_s` on a thread of its own while the block runs; its errors fail the test."""
    done, errors = threading.Event(), []

    def poll() -> None:
        while not done.wait(every_s):
            try:
                call()
            except Exception as exc:
                errors.append(exc)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(60)
    assert not errors, errors[:3]


def admin_children(parent: int) -> list[int]:
    """The pids of `parent`'s Kafka admin processes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        # The command may hold spaces and parentheses: the fields after its closing one.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"lotlens_gateway.admin_process" in cmdline:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def end_left(children: list[int]) -> None:
    """Kill the admin processes a failed test left behind."""
    for child in children:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill -9"])
def test_the_admin_processes_end_with_the_gateway(settings: ServiceSettings, stop: signal.Signals,
                                                  tmp_path: Path) -> None:
    port, ops_port = free_port(), free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "KAFKA_GROUP_PREFIX": new_id("orphans-") + ".", "DATABASE_URL": settings.database.database_url,
           "LOTLENS_CLIENTS": json.dumps({new_id("acme-"): new_key()}), "LOTLENS_GATEWAY_PORT": str(port),
           "LOTLENS_METRICS_PORT": str(ops_port), "LOTLENS_SHUTDOWN_DRAIN_S": "1",
           **{f"LOTLENS_TOPIC_{name.upper()}": getattr(settings.topics, name) for name in TOPIC_NAMES}}
    with (tmp_path / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "lotlens_gateway"], cwd=ROOT, env=env, stdout=log,
                                   stderr=log)
    children: list[int] = []
    try:
        def both_read() -> bool:
            try:
                health = httpx2.get(f"http://127.0.0.1:{ops_port}/health", timeout=30).json()
                text = httpx2.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=30).text
            except httpx2.HTTPError:
                return False
            return health["kafka"] == "connected" and samples(text, "lotlens_kafka_group_lag_read") == {(): 1}

        wait_for(both_read, "the gateway's health probe and lag gauges read", timeout_s=60, every_s=0.2)
        children = admin_children(gateway.pid)
        assert len(children) == 2, children  # the health probe's and the lag gauges'
        gateway.send_signal(stop)
        assert gateway.wait(60) == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
        wait_for(lambda: not any(running(child) for child in children), "the admin processes gone",
                 timeout_s=10)
    finally:
        gateway.kill()
        gateway.wait(10)
        end_left(children)


def test_an_admin_process_stuck_in_a_call_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    # Its pipe's end is only seen between calls: in a call that never returns, the child watches
    # its parent instead.
    marker = tmp_path / "in-its-call"
    code = ("import sys, time\n"
            "from functools import partial\n"
            "from pathlib import Path\n"
            "from lotlens_gateway.admin_process import AdminProcess\n"
            "from lotlens_gateway.health import read_health\n"
            "from tests.integration.kafka_admin_fakes import HangingAdmin\n"
            f"AdminProcess(partial(HangingAdmin, Path({str(marker)!r})))"
            ".run(read_health, ['vision'], '', 1.0, timeout_s=3600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    children: list[int] = []
    try:
        wait_for(lambda: len(admin_children(parent.pid)) == 1, "the admin process started", timeout_s=30)
        children = admin_children(parent.pid)
        wait_for(marker.exists, "the admin process in its call", timeout_s=30)  # hanging there
        parent.kill()
        parent.wait(10)
        started = time.monotonic()
        wait_for(lambda: not running(children[0]), "the admin process gone", timeout_s=10)
        print(f"the admin process ended {time.monotonic() - started:.2f} s after its parent")
    finally:
        parent.kill()
        parent.wait(10)
        end_left(children)
