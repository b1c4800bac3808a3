"""Every LotLens consumer group's lag and members on the gateway's operations port, read from the
broker: a group none of whose instances runs still shows how far behind it is, and a stable group
whose members leave a partition to nobody shows that partition."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx2
import pytest
from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from lotlens_common.settings import VISION_BATCHER_GROUP, KafkaSettings, ServiceSettings
from lotlens_gateway.config import CONSUMER_GROUPS
from tests.conftest import new_id
from tests.integration.gateway_support import running_gateway
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def samples(metrics_text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric, by their sorted labels."""
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(metrics_text)
            for sample in family.samples if sample.name == name}


def test_the_lag_of_a_group_with_no_running_instance_is_on_the_gateways_metrics(
        settings: ServiceSettings, engine: Engine) -> None:
    prefix = new_id("lag-") + "."
    stopped = prefix + "lotlens-translator"
    topic = settings.topics.vision
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for n in range(7):
        producer.produce(topic, value=f"event {n}".encode(), partition=0)
    assert producer.flush(30) == 0
    # The translator read 2 of the 7 events, committed, and stopped: no member, no lag monitor.
    reader = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": stopped,
                       "enable.auto.commit": False})
    reader.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    reader.close()

    kafka = KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers, group_prefix=prefix)
    with running_gateway(settings, engine, kafka=kafka) as gw:
        text = httpx2.get(f"{gw.ops_url}/metrics", timeout=30).text

    lag = samples(text, "lotlens_kafka_group_lag_messages")
    assert lag.get((("group", stopped), ("topic", topic))) == 5, lag
    members = samples(text, "lotlens_kafka_group_members")
    assert members == {(("group", prefix + group),): 0 for group in CONSUMER_GROUPS}, members
    assert samples(text, "lotlens_kafka_group_lag_read") == {(): 1}


def test_a_group_that_never_committed_lags_by_all_of_each_topic_it_consumes(
        settings: ServiceSettings, engine: Engine) -> None:
    # A group whose members run but never commit (stuck on its very first batch), or whose new
    # service crash-loops from its start, had no committed offset, and its partitions were skipped:
    # no lag while its topics filled, so LotLensConsumerStuck and LagGrowing could not fire. Its
    # consumers start at the earliest offset the broker keeps (auto.offset.reset=earliest): that
    # log, to its end, is what it is behind by.
    prefix = new_id("lag-") + "."
    topics = settings.topics
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for n in range(4):
        producer.produce(topics.submissions, value=f"submission {n}".encode(), partition=n % 3)
    for n in range(3):
        producer.produce(topics.vision, value=f"vision {n}".encode(), partition=0)
    assert producer.flush(30) == 0
    # Retention took the first submission of partition 0: its log starts at offset 1.
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    [deleted] = admin.delete_records([TopicPartition(topics.submissions, 0, 1)]).values()
    assert deleted.result(30).low_watermark == 1
    # The translator committed once, on its lots' partition 0, after the first of them.
    reader = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                       "group.id": prefix + "lotlens-translator", "enable.auto.commit": False})
    reader.commit(offsets=[TopicPartition(topics.vision, 0, 1)], asynchronous=False)
    reader.close()

    kafka = KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers, group_prefix=prefix)
    with running_gateway(settings, engine, kafka=kafka) as gw:
        text = httpx2.get(f"{gw.ops_url}/metrics", timeout=30).text

    kept = {topics.submissions: 3, topics.vision: 3}  # on the broker, from each log's start
    expected = {
        ("lotlens-vision-batcher", topics.submissions): kept[topics.submissions],
        ("lotlens-translator", topics.vision): kept[topics.vision] - 1,
        ("lotlens-translator", topics.submissions): kept[topics.submissions],
        **{("lotlens-result-store", topic): kept.get(topic, 0) for topic in topics.record_topics()},
        ("lotlens-webhook-dispatcher", topics.completions): 0,
    }
    lag = samples(text, "lotlens_kafka_group_lag_messages")
    assert lag == {(("group", prefix + group), ("topic", topic)): behind
                   for (group, topic), behind in expected.items()}, lag
    assert samples(text, "lotlens_kafka_group_lag_read") == {(): 1}


def test_a_broker_the_gateway_cannot_read_says_so_instead_of_leaving_the_lag_out_unseen(
        settings: ServiceSettings, engine: Engine) -> None:
    # The lag and member series are left out when the broker does not answer (no stale figures):
    # the alerts on them then saw nothing and went quiet. A gauge says whether the read worked,
    # for an alert of its own (LotLensConsumerLagUnread).
    with running_gateway(settings, engine, kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9")) as gw:
        text = httpx2.get(f"{gw.ops_url}/metrics", timeout=60).text
    assert samples(text, "lotlens_kafka_group_members") == {}
    assert samples(text, "lotlens_kafka_group_lag_read") == {(): 0}


@contextmanager
def static_member(settings: ServiceSettings, group: str, instance: str,
                  *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """A static member of `group` on the submissions topic, in a process of its own, killed at the end."""
    process = subprocess.Popen([sys.executable, "-m", "tests.integration.static_member",
                                settings.kafka.bootstrap_servers, settings.topics.submissions, group,
                                instance, *flags])
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)


def assigned(admin: AdminClient, group: str) -> tuple[ConsumerGroupState, dict[str, int]]:
    """The group's state, and the partitions assigned to each of its members by instance id."""
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return described.state, {member.group_instance_id: len(member.assignment.topic_partitions)
                             for member in described.members}


def member_ids(admin: AdminClient, group: str) -> dict[str, str]:
    """The group's member ids by instance id."""
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {member.group_instance_id: member.member_id for member in described.members}


def test_a_partition_no_member_of_a_stable_group_is_assigned_is_on_the_gateways_metrics(
        settings: ServiceSettings, engine: Engine) -> None:
    # A static member killed between the two rounds of a cooperative rebalance and restarted at
    # once gets back what its old process kept: the partition it gave up is nobody's, unread for
    # good (in CI, a job stayed `translating`). It showed only as lag, which 30 stuck lots never
    # bring to the lag alerts' 100 messages.
    prefix = new_id("unassigned-") + "."
    group, partitions = prefix + VISION_BATCHER_GROUP, settings.topics.partitions
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    stable = ConsumerGroupState.STABLE
    with ExitStack() as members:
        doomed = members.enter_context(static_member(settings, group, "a", "--dies-at-revoke"))
        wait_for(lambda: assigned(admin, group) == (stable, {"a": partitions}),
                 lambda: f"a holding them all (seen: {assigned(admin, group)})", timeout_s=60, every_s=0.2)
        dead = member_ids(admin, group)["a"]
        members.enter_context(static_member(settings, group, "b"))
        assert doomed.wait(60) == 0  # b's join took a partition from a: it died in that revoke
        members.enter_context(static_member(settings, group, "a"))  # restarted at once
        # The dead process stays listed for its session: the restart is its id's new member id.
        wait_for(lambda: member_ids(admin, group).get("a", dead) != dead, "a back in the group", timeout_s=30,
                 every_s=0.2)
        state, held = assigned(admin, group)
        assert state == stable and sum(held.values()) == partitions - 1, (state, held)

        kafka = KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers, group_prefix=prefix)
        with running_gateway(settings, engine, kafka=kafka) as gw:
            text = httpx2.get(f"{gw.ops_url}/metrics", timeout=30).text
        assert assigned(admin, group) == (state, held)  # still so while the gateway read it

    unassigned = samples(text, "lotlens_kafka_group_unassigned_partitions")
    # The other groups have no member: none of their partitions is counted (GroupAbsent's case).
    assert unassigned == {(("group", prefix + name),): 1 if name == VISION_BATCHER_GROUP else 0
                          for name in CONSUMER_GROUPS}, unassigned
    assert samples(text, "lotlens_kafka_group_members")[(("group", group),)] == 2
