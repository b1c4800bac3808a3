"""What `discard` drops is sent again by the caller; what it did not drop must never be taken
for dropped (a fake librdkafka producer whose purge takes effect late, no broker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError

from lotlens_common import producer as producer_module
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings

Report = Callable[[KafkaError | None, Any], None]


class LatePurge:
    """Purges when it next serves reports, what was produced after `purge` returned too: what
    librdkafka's non-blocking purge does while its broker threads are busy."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.queued: list[Report] = []
        self.purging = False

    def produce(self, _topic: str, on_delivery: Report, **_kwargs: Any) -> None:
        self.queued.append(on_delivery)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purging = True

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        error = KafkaError(KafkaError._PURGE_QUEUE) if self.purging else None
        for report in self.queued:
            report(error, None)
        self.queued, self.purging = [], False
        return 0

    def __len__(self) -> int:
        return len(self.queued)


def _event() -> Envelope:
    return Envelope(event=JobCancelled(job_id="job", cancelled_at="2026-01-01T00:00:00Z"), client_id="c")


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> EventProducer:
    monkeypatch.setattr(producer_module, "Producer", LatePurge)
    return EventProducer(KafkaSettings(), "test")


def test_an_event_purged_though_published_after_the_last_discard_fails_the_flush(
        producer: EventProducer) -> None:
    # Its purge was taken for the discard's and no failure: the flush said Kafka had it.
    outcomes: list[str] = []
    producer.discard()
    producer.publish_raw("t", b"job", b"sent-after", [])
    producer.publish("t", _event(), lambda: outcomes.append("delivered"),
                     lambda purged: outcomes.append("purged" if purged else "failed"))
    with pytest.raises(PublishError, match="2 failed"):
        producer.flush()
    assert outcomes == ["failed"]  # the relay sends it again after everything queued behind it


def test_an_event_discard_dropped_is_no_failure_even_when_its_report_comes_later(
        producer: EventProducer) -> None:
    outcomes: list[str] = []
    producer.publish("t", _event(), lambda: outcomes.append("delivered"),
                     lambda purged: outcomes.append("purged" if purged else "failed"))
    producer.discard()
    producer.flush()
    assert outcomes == ["purged"]
