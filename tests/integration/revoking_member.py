"""A consumer group member that dies the moment its first cooperative rebalance takes partitions
from it: killed between the two rounds of an incremental rebalance, before it could join again.

Run as `python -m tests.integration.revoking_member BOOTSTRAP TOPIC GROUP INSTANCE`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from lotlens_common.envelope import Envelope
from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, TopicSettings

Callback = Callable[[Consumer, list[TopicPartition]], None]


class DiesAtRevoke(Consumer):
    """Exits the process inside the callback that takes partitions away: the revoke is done, the
    join that would complete the rebalance is never sent."""

    def subscribe(self, topics: list[str], on_assign: Callback | None = None,
                  on_revoke: Callback | None = None, on_lost: Callback | None = None) -> None:
        def revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if on_revoke is not None:
                on_revoke(consumer, partitions)
            if partitions:
                os._exit(0)
        super().subscribe(topics, on_assign=on_assign, on_revoke=revoke, on_lost=on_lost)


def main(bootstrap: str, topic: str, group: str, instance: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, group_instance_id=instance)
    topics = TopicSettings.model_validate({"submissions": topic})

    def ignore(_envelopes: Sequence[Envelope]) -> None:
        """Nothing to do: the member is here to hold partitions."""

    def make(config: dict[str, Any]) -> Consumer:
        return DiesAtRevoke(config)

    run_consumer(kafka, topics, ConsumerSpec(group_id=group, topics=[topic], handler=ignore),
                 EventProducer(kafka, "revoking-member"), threading.Event(), make)


if __name__ == "__main__":
    main(*sys.argv[1:5])
