"""A static member killed between the two rounds of a cooperative rebalance, and restarted under
its instance id at once (a pod restarted in place): the broker hands the new process the
assignment the old one was left with, without a rebalance, and the partitions the old one gave up
in the first round were assigned to nobody. Seen in CI: a restart of the result-store while its
group was still settling left half its partitions unread for good, and a job stayed
`translating`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from lotlens_common.envelope import Envelope
from lotlens_common.kafka import ConsumerSpec
from lotlens_common.settings import ServiceSettings
from tests.conftest import new_id
from tests.integration.consumer_loops import consumer_loops
from tests.integration.dead_letter_support import cancelled
from tests.polling import wait_for

pytestmark = pytest.mark.integration


@contextmanager
def member(settings: ServiceSettings, group: str, instance: str, handled: list[str]) -> Iterator[None]:
    """The services' consumer loop as a static member `instance` of `group`."""
    kafka = settings.kafka.model_copy(update={"group_instance_id": instance})

    def handle(envelopes: Sequence[Envelope]) -> None:
        handled.extend(e.job_id for e in envelopes)

    spec = ConsumerSpec(group_id=group, topics=[settings.topics.submissions], handler=handle)
    with consumer_loops(kafka, settings.topics, [spec]):
        yield


def assigned(settings: ServiceSettings, group: str) -> dict[str, int]:
    """Each member's partition count by its group instance id."""
    admin = AdminClient(settings.kafka.client_config())
    found = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {m.group_instance_id or m.member_id: len(m.assignment.topic_partitions) for m in found.members}


def test_a_member_killed_between_the_rounds_of_a_rebalance_and_restarted_leaves_no_partition_unread(
        settings: ServiceSettings) -> None:
    topic, group, partitions = settings.topics.submissions, new_id("group-"), settings.topics.partitions
    handled: list[str] = []
    # The services' loop names its static member `<instance>-<group>`: the restart below is "a".
    # The doomed member's session (45 s) outlasts its restart: the broker hands the new process
    # what the old one kept, without a rebalance (the partition it gave up is nobody's then).
    a = f"a-{group}"
    doomed = subprocess.Popen([sys.executable, "-m", "tests.integration.static_member",
                               settings.kafka.bootstrap_servers, topic, group, a, "--dies-at-revoke"])
    with ExitStack() as members:
        try:
            wait_for(lambda: assigned(settings, group) == {a: partitions}, "a holding every partition",
                     timeout_s=60, every_s=0.2)
            members.enter_context(member(settings, group, "b", handled))
            # The second member's join takes partitions from the first: it dies in that revoke.
            assert doomed.wait(60) == 0
        finally:
            doomed.kill()
        # The hole: b got none in that first round (and so asks nothing); the dead process keeps
        # what it did not give up, listed until its session ends.
        wait_for(lambda: sum(assigned(settings, group).values()) < partitions, "a partition nobody's",
                 timeout_s=10, every_s=0.2)
        members.enter_context(member(settings, group, "a", handled))  # restarted at once
        jobs = [new_id("job-") for _ in range(partitions)]
        producer = Producer(settings.kafka.client_config())
        for partition, job in enumerate(jobs):
            producer.produce(topic, cancelled(job), partition=partition, headers=[("type", b"JobCancelled")])
        assert producer.flush(10) == 0
        wait_for(lambda: set(jobs) <= set(handled), "an event on every partition handled", timeout_s=60)
        wait_for(lambda: sum(assigned(settings, group).values()) == partitions, "all partitions assigned",
                 timeout_s=30, every_s=0.2)
