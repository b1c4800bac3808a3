"""A message's delivery report is a partial of positional arguments: librdkafka calls one per
message (50,000 for a collection's events), and a partial of keywords merged them into a new
dict at every call (a fake librdkafka producer, no broker)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from confluent_kafka import KafkaError

from lotlens_common import producer as producer_module
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings

Report = Callable[[KafkaError | None, Any], None]


class Recording:
    """Keeps each message's report; `flush` calls them with the error the test sets."""

    error: KafkaError | None = None

    def __init__(self, _config: dict[str, Any]) -> None:
        self.reports: list[Report] = []

    def produce(self, _topic: str, on_delivery: Report, **_kwargs: Any) -> None:
        self.reports.append(on_delivery)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.reports = []

    def flush(self, _timeout: float = 0) -> int:
        for report in self.reports:
            report(self.error, None)
        self.reports = []
        return 0

    def __len__(self) -> int:
        return len(self.reports)


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> EventProducer:
    monkeypatch.setattr(producer_module, "Producer", Recording)
    return EventProducer(KafkaSettings(), "test")


def _event(job_id: str) -> Envelope:
    return Envelope(event=JobCancelled(job_id=job_id, cancelled_at="2026-01-01T00:00:00Z"), client_id="c")


def test_each_report_takes_its_arguments_by_position(producer: EventProducer) -> None:
    delivered: list[str] = []
    producer.publish("topic", _event("a"), partial(delivered.append, "a"))
    producer.publish("topic", _event("b"))
    reports = producer._producer.reports  # type: ignore[attr-defined]
    assert [type(report) for report in reports] == [partial, partial]
    assert [report.keywords for report in reports] == [{}, {}]
    producer.flush()
    assert delivered == ["a"] and producer.pending() == 0


def test_a_failed_message_is_reported_to_its_caller_and_fails_the_flush(producer: EventProducer) -> None:
    failed: list[bool] = []
    producer.publish("topic", _event("a"), failed=failed.append)
    producer._producer.error = KafkaError(KafkaError._MSG_TIMED_OUT)  # type: ignore[attr-defined]
    with pytest.raises(PublishError):
        producer.flush()
    assert failed == [False]
