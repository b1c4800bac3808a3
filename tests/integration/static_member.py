"""A static member of a consumer group (cooperative-sticky, as the services' consumers), polling until
it is killed; with `--dies-at-revoke` it exits the moment a rebalance first takes partitions from it,
between the two rounds of that incremental rebalance, before it could join again.

Run as `python -m tests.integration.static_member BOOTSTRAP TOPIC GROUP INSTANCE [--dies-at-revoke]`.
"""

from __future__ import annotations

import os
import sys

from confluent_kafka import Consumer, TopicPartition


def main(arguments: list[str]) -> None:
    bootstrap, topic, group, instance = arguments[:4]
    dies_at_revoke = "--dies-at-revoke" in arguments[4:]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.instance.id": instance,
                         "partition.assignment.strategy": "cooperative-sticky",
                         "enable.auto.commit": False, "session.timeout.ms": 45000})

    def revoked(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The revoke is done; the join that would hand the partitions over is never sent.
        if dies_at_revoke and partitions:
            os._exit(0)

    consumer.subscribe([topic], on_revoke=revoked)
    while True:
        consumer.poll(0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
