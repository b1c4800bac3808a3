"""A fake Kafka consumer and producer for the one consumer loop (no broker), and a runner that
drives `run_consumer` with them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

from confluent_kafka import KafkaError, TopicPartition
from sqlalchemy.exc import OperationalError

from lotlens_common.envelope import Envelope, encode
from lotlens_common.events import JobCancelled
from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings, TopicSettings

TOPICS = TopicSettings()


class FakeMessage:
    """The parts of a confluent_kafka.Message the loop reads."""

    def __init__(self, offset: int, value: bytes, headers: list[tuple[str, bytes]] | None = None,
                 partition: int = 0) -> None:
        self._offset, self._value, self._headers, self._partition = offset, value, headers, partition

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"job"

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def topic(self) -> str:
        return TOPICS.submissions

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


class FencedMessage(FakeMessage):
    """What `consume` hands out once the client failed for good (a static member fenced)."""

    def __init__(self) -> None:
        super().__init__(-1, b"")

    def error(self) -> KafkaError:  # type: ignore[override]
        # As librdkafka hands it out in a message: the code says fatal, the `fatal()` flag does not.
        return KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer with same "
                          "group.instance.id")


class FakeConsumer:
    """Hands out the given batches once each, then sets `stop`; records stored offsets and how
    many clients were made and closed (each `make_consumer` call is one)."""

    def __init__(self, batches: list[list[FakeMessage]], stop: threading.Event) -> None:
        self.batches, self.stop = batches, stop
        self.stored: list[int] = []
        self.sought: list[tuple[int, int]] = []  # (partition, offset)
        self.config: dict[str, Any] = {}
        self.made = self.closed = 0

    def __call__(self, config: dict[str, Any]) -> FakeConsumer:
        self.config = config
        self.made += 1
        return self

    def subscribe(self, _topics: list[str], on_assign: object = None, on_revoke: object = None,
                  on_lost: object = None) -> None:
        """Nothing to join: `consume` hands out the given batches."""

    def consume(self, _n: int, _timeout: float) -> list[FakeMessage]:
        if not self.batches:
            self.stop.set()
            return []
        return self.batches.pop(0)

    def assignment(self) -> list[object]:
        return []

    def store_offsets(self, message: FakeMessage) -> None:
        self.stored.append(message.offset())

    def seek(self, position: TopicPartition) -> None:
        """Recorded only: the batches handed out are fixed."""
        self.sought.append((position.partition, position.offset))

    def close(self) -> None:
        self.closed += 1


class FakeProducer:
    """Records what would be dead-lettered; `flush` confirms it."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, bytes | None, list[tuple[str, Any]]]] = []
        self.sent: list[tuple[str, bytes | None, list[tuple[str, Any]]]] = []

    def publish_raw(self, topic: str, _key: bytes | None, value: bytes | None,
                    headers: list[tuple[str, Any]]) -> None:
        self.queued.append((topic, value, headers))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.sent += self.queued
        self.queued = []

    def dead_letter_reasons(self) -> list[str]:
        return [dict(headers)["dlq.reason"].decode() for _, _, headers in self.sent]


class LosingProducer(FakeProducer):
    """Its first `failing` flushes lose what is queued and report it, as librdkafka does for
    messages it could not deliver in `message.timeout.ms` (to whichever caller flushes)."""

    def __init__(self, failing: int = 1) -> None:
        super().__init__()
        self.failing = failing

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.failing and self.queued:
            self.failing -= 1
            lost, self.queued = len(self.queued), []
            raise PublishError(f"0 unacknowledged, {lost} failed: ['_MSG_TIMED_OUT']")
        super().flush(timeout_s)


def event(n: int) -> bytes:
    return encode(Envelope(event=JobCancelled(job_id=f"job-{n}", cancelled_at="2026-01-01T00:00:00Z"),
                           client_id="c"))


def run(batches: list[list[FakeMessage]], handler: Callable[[Sequence[Envelope]], None],
        stop: threading.Event | None = None, group: str = "g",
        event_types: frozenset[str] | None = None,
        producer: FakeProducer | None = None, settings: KafkaSettings | None = None
        ) -> tuple[FakeConsumer, FakeProducer]:
    stop = stop or threading.Event()
    consumer, producer = FakeConsumer(batches, stop), producer or FakeProducer()
    spec = ConsumerSpec(group_id=group, topics=[TOPICS.submissions], handler=handler, event_types=event_types)
    run_consumer(settings or KafkaSettings(), TOPICS, spec,
                 cast(EventProducer, producer), stop, make_consumer=consumer)  # type: ignore[arg-type]
    return consumer, producer


def outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


class _StatementTimeout(Exception):
    """What psycopg2 raises for SQLSTATE 57014 (`statement_timeout`), as an OperationalError's `orig`."""

    pgcode = "57014"


def statement_timeout() -> OperationalError:
    """A statement PostgreSQL cancelled at its `statement_timeout`."""
    return OperationalError("SELECT ...", {}, _StatementTimeout("canceling statement"))


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockedStop(threading.Event):
    """A stop event whose waits pass on `clock` at once instead of sleeping; set by itself once
    the clock reaches `until`."""

    def __init__(self, clock: FakeClock, until: float) -> None:
        super().__init__()
        self.clock, self.until = clock, until

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += timeout or 0.0
        if self.clock.now >= self.until:
            self.set()
        return self.is_set()
