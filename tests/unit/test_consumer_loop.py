"""The one consumer loop, driven with a fake consumer and producer (no broker): what is handled,
what is dead-lettered and which offsets are stored, in outages, shutdowns and poison batches."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
from sqlalchemy.exc import OperationalError

from lotlens_common import kafka
from lotlens_common.envelope import Envelope, encode
from lotlens_common.events import JobCancelled
from lotlens_common.kafka import TRANSIENT_ERRORS, ConsumerSpec, EventProducer, PublishError, run_consumer
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


class FakeConsumer:
    """Hands out the given batches once each, then sets `stop`; records stored offsets."""

    def __init__(self, batches: list[list[FakeMessage]], stop: threading.Event) -> None:
        self.batches, self.stop = batches, stop
        self.stored: list[int] = []
        self.config: dict[str, Any] = {}

    def __call__(self, config: dict[str, Any]) -> FakeConsumer:
        self.config = config
        return self

    def subscribe(self, _topics: list[str], on_assign: object = None, on_revoke: object = None,
                  on_lost: object = None) -> None:
        pass

    def consume(self, _n: int, _timeout: float) -> list[FakeMessage]:
        if not self.batches:
            self.stop.set()
            return []
        return self.batches.pop(0)

    def store_offsets(self, message: FakeMessage) -> None:
        self.stored.append(message.offset())

    def close(self) -> None:
        pass


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


def event(n: int) -> bytes:
    return encode(Envelope(event=JobCancelled(job_id=f"job-{n}", cancelled_at="2026-01-01T00:00:00Z"),  # type: ignore[arg-type]
                           client_id="c"))


def run(batches: list[list[FakeMessage]], handler: Callable[[Sequence[Envelope]], None],
        stop: threading.Event | None = None, group: str = "g") -> tuple[FakeConsumer, FakeProducer]:
    stop = stop or threading.Event()
    consumer, producer = FakeConsumer(batches, stop), FakeProducer()
    run_consumer(KafkaSettings(), TOPICS, ConsumerSpec(group_id=group, topics=[TOPICS.submissions],
                                                       handler=handler),
                 cast(EventProducer, producer), stop, make_consumer=consumer)  # type: ignore[arg-type]
    return consumer, producer


def outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_shutdown_during_an_outage_dead_letters_nothing_and_stores_no_offset() -> None:
    stop = threading.Event()
    calls = []

    def database_down(envelopes: Sequence[Envelope]) -> None:
        calls.append(len(envelopes))
        if len(calls) == 2:
            stop.set()  # SIGTERM while PostgreSQL is down
        raise outage()

    consumer, producer = run([[FakeMessage(0, event(0)), FakeMessage(1, event(1))]], database_down, stop)
    assert producer.sent == [], "a valid message was dead-lettered during shutdown"
    assert consumer.stored == [], "an offset moved past a message that was never handled"


def test_shutdown_while_isolating_a_poison_message_keeps_the_settled_prefix_only() -> None:
    stop = threading.Event()
    poison, good = event(0), event(1)

    def handler(envelopes: Sequence[Envelope]) -> None:
        if len(envelopes) > 1 or envelopes[0].job_id == "job-0":
            raise ValueError("bad data")
        stop.set()
        raise outage()  # the database goes down while the valid message is handled alone

    consumer, producer = run([[FakeMessage(0, poison), FakeMessage(1, good)]], handler, stop)
    assert [value for _, value, _ in producer.sent] == [poison]
    assert consumer.stored == [0]


def test_a_poison_message_is_dead_lettered_once_and_the_rest_of_the_batch_goes_through() -> None:
    handled: list[str] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        if any(e.job_id == "job-1" for e in envelopes):
            raise ValueError("bad data")
        handled.extend(e.job_id for e in envelopes)

    messages = [FakeMessage(i, event(i)) for i in range(3)] + [FakeMessage(3, b"not json")]
    consumer, producer = run([messages], handler)
    assert handled == ["job-0", "job-2"]
    assert producer.dead_letter_reasons() == ["undecodable", "handler-failed"]
    assert [dict(h)["dlq.offset"] for _, _, h in producer.sent] == [b"3", b"1"]
    assert all(dict(h)["dlq.group"] == b"g" for _, _, h in producer.sent)
    assert consumer.stored == [0, 1, 2, 3]


def test_a_transient_failure_is_retried_until_it_passes() -> None:
    attempts: list[int] = []

    def flaky(envelopes: Sequence[Envelope]) -> None:
        attempts.append(len(envelopes))
        if len(attempts) < 3:
            raise PublishError("broker down")

    consumer, producer = run([[FakeMessage(0, event(0)), FakeMessage(1, event(1))]], flaky)
    assert attempts == [2, 2, 2] and producer.sent == [] and consumer.stored == [0, 1]


def future(n: int) -> bytes:
    doc = orjson.loads(event(n))
    doc["version"] = 99
    return orjson.dumps(doc)


def test_a_future_event_version_is_dead_lettered_with_its_reason_and_counted() -> None:
    handled: list[str] = []
    before = kafka.DEAD_LETTERS.labels(group="g", reason="future-version")._value.get()
    consumer, producer = run([[FakeMessage(0, future(0)), FakeMessage(1, event(1))]],
                             lambda envelopes: handled.extend(e.job_id for e in envelopes))
    assert handled == ["job-1"], "a version-99 event was handled as version 1"
    assert producer.dead_letter_reasons() == ["future-version"]
    assert b"version 99" in dict(producer.sent[0][2])["dlq.error"]
    assert kafka.DEAD_LETTERS.labels(group="g", reason="future-version")._value.get() == before + 1
    assert consumer.stored == [0, 1]


def test_a_replayed_message_is_handled_by_the_group_it_is_addressed_to_alone() -> None:
    replayed = [("lotlens.replay.group", b"vision")]
    seen: dict[str, list[str]] = {"vision": [], "translator": []}
    for group in seen:
        consumer, _ = run([[FakeMessage(0, event(0), replayed), FakeMessage(1, event(1))]],
                          lambda envelopes, g=group: seen[g].extend(e.job_id for e in envelopes), group=group)
        assert consumer.stored == [0, 1]
    assert seen == {"vision": ["job-0", "job-1"], "translator": ["job-1"]}


def test_every_service_shares_the_one_list_of_transient_errors() -> None:
    import lotlens_common.stage.service as stage_service
    import lotlens_result_store.__main__ as result_store
    import lotlens_webhook_dispatcher.bootstrap as dispatcher
    for module in (stage_service, result_store, dispatcher):
        assert "TRANSIENT" not in vars(module), f"{module.__name__} keeps its own list"
    assert "transient" not in ConsumerSpec.__dataclass_fields__, "a consumer can still bring its own list"
    assert {OperationalError, PublishError} <= set(TRANSIENT_ERRORS)
