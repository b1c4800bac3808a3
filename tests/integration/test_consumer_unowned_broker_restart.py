"""A consumer's look at its group (`consumer_unowned`) reads it again soon after broker restarts.

In chaos runs every look of a consumer timed out for minutes after a Kafka restart (its admin
client's describes never answered again), so partitions left to nobody would not have been seen;
and with those requests pending a second restart aborted the process inside librdkafka. A private
broker, stopped and started again as a rolling restart does."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from lotlens_common.consumer_unowned import UnownedWatch
from tests.conftest import new_id
from tests.private_kafka import PrivateKafka, private_kafka

pytestmark = pytest.mark.integration


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[PrivateKafka]:
    with private_kafka(tmp_path / "kafka") as started:
        yield started


@pytest.fixture()
def member(broker: PrivateKafka) -> Iterator[tuple[str, str]]:
    """A topic of 3 partitions, and a group whose one member holds them: (group, topic)."""
    topic, group = new_id("topic-"), new_id("group-")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    stop = threading.Event()

    def poll() -> None:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                             "partition.assignment.strategy": "cooperative-sticky", "log_level": 0})
        consumer.subscribe([topic])
        while not stop.is_set():
            consumer.poll(0.2)
        consumer.close()

    polling = threading.Thread(target=poll, daemon=True)
    polling.start()
    yield group, topic
    stop.set()
    polling.join(30)


def reads(watch: UnownedWatch, caplog: pytest.LogCaptureFixture) -> bool:
    """One look; True when the broker answered it."""
    caplog.clear()
    watch.look()
    return not any("not read" in record.getMessage() for record in caplog.records)


def test_the_look_reads_the_group_again_after_a_broker_restart(
        broker: PrivateKafka, member: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lotlens_common.consumer_unowned")
    group, topic = member
    config: dict[str, str | int | float | bool] = {"bootstrap.servers": broker.bootstrap, "log_level": 0}
    watch = UnownedWatch(group, [topic], after_s=3600, new_admin=lambda: AdminClient(config))
    deadline = time.monotonic() + 60
    while not reads(watch, caplog):
        assert time.monotonic() < deadline, "the group never read before the restart"
    for _ in range(2):  # the old client stuck after 2 of 5 single restarts here
        broker.stop()
        time.sleep(5)
        broker.start()
        back = time.monotonic()
        while not reads(watch, caplog):
            assert time.monotonic() - back < 60, [r.getMessage() for r in caplog.records]
            time.sleep(0.1)
        print(f"read again {time.monotonic() - back:.1f} s after the broker was back")  # measured
        for _ in range(3):  # and from then on
            assert reads(watch, caplog), [r.getMessage() for r in caplog.records]
