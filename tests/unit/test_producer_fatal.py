"""A producer librdkafka has failed for good (a fatal idempotence error) is replaced, with a
fake librdkafka producer (no broker)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from lotlens_common import producer as producer_module
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings


class FakeLibrdkafka:
    """The first one made is failed for good (every produce raises _FATAL); the others take all."""

    made: ClassVar[list[FakeLibrdkafka]] = []

    def __init__(self, _config: dict[str, Any]) -> None:
        self.fatal = not FakeLibrdkafka.made
        self.produced: list[bytes | None] = []
        FakeLibrdkafka.made.append(self)

    def produce(self, _topic: str, value: bytes | None = None, **_kwargs: Any) -> None:
        if self.fatal:
            # What rd_kafka_check_produce() answers after e.g. CLUSTER_AUTHORIZATION_FAILED on
            # InitProducerId: every later produce fails.
            raise KafkaException(KafkaError(KafkaError._FATAL, "Fatal error: InitProducerId refused",
                                            fatal=True))
        self.produced.append(value)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        """Nothing queued here."""

    def flush(self, _timeout: float = 0) -> int:
        return 0


def test_a_producer_failed_for_good_is_replaced_and_the_next_publish_goes_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # It raised KafkaException(_FATAL) from every produce, for good: the consumer loop took it for
    # its own consumer failing and rejoined the group every second, and the relay and the stages
    # retried forever with nothing published while every probe said the process was well.
    FakeLibrdkafka.made = []
    monkeypatch.setattr(producer_module, "Producer", FakeLibrdkafka)
    events = EventProducer(KafkaSettings(), "test")
    with pytest.raises(PublishError, match="failed for good"):
        events.publish_raw("t", b"job", b"one", [])
    events.publish_raw("t", b"job", b"one", [])  # the caller's retry
    events.flush()
    assert [maker.fatal for maker in FakeLibrdkafka.made] == [True, False]
    assert FakeLibrdkafka.made[1].produced == [b"one"]
