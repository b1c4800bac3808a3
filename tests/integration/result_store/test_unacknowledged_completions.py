"""A job is marked announced only once Kafka has acknowledged its `JobCompleted`: not when the copy
an earlier round sent was purged late, nor when a renewed producer dropped it. On the real
database, with librdkafka's producer replaced by a stand-in whose broker is down, answers without
acknowledging, or works (the late purge is a race a real broker loses only sometimes)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from sqlalchemy import Engine, insert

from lotlens_common import producer as producer_module
from lotlens_common.envelope import decode
from lotlens_common.events import JobCompleted
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings
from lotlens_common.tables import jobs
from lotlens_result_store.completion import publish_completions
from tests.conftest import new_id
from tests.integration.result_store.support import job_published

pytestmark = pytest.mark.integration

Report = Callable[[KafkaError | None, Any], None]
TOPIC = "completions"


@dataclass
class Broker:
    """What the test's producers reach: nothing (an outage), a broker that answers but never
    acknowledges (a partition librdkafka waits on for good), or one that works."""

    answers: bool = False
    acknowledges: bool = False
    refusals: int = 0  # how many produce calls next fail at once (a local error, e.g. a full queue)
    written: list[bytes] = field(default_factory=list)

    def announced(self) -> list[str]:
        """The job ids of every JobCompleted written, in order."""
        envelopes = [decode(value) for value in self.written]
        return [e.job_id for e in envelopes if isinstance(e.event, JobCompleted)]


@dataclass
class _Message:
    value: bytes
    report: Report
    in_flight: bool  # sent to a broker that answered; otherwise still queued


class StandInProducer:
    """librdkafka's producer as far as EventProducer uses it. Its purge is late, as librdkafka's
    non-blocking one is while its broker threads are busy: the reports come with the next flush,
    not with the poll right after. A dropped instance never serves them."""

    def __init__(self, broker: Broker, _config: dict[str, Any]) -> None:
        self._broker = broker
        self._messages: list[_Message] = []
        self._purged: list[_Message] = []

    def produce(self, _topic: str, value: bytes, on_delivery: Report, **_kwargs: Any) -> None:
        if self._broker.refusals:
            self._broker.refusals -= 1
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG))
        self._messages.append(_Message(value, on_delivery, in_flight=self._broker.answers))

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        dropped = [m for m in self._messages if (in_flight if m.in_flight else in_queue)]
        self._messages = [m for m in self._messages if m not in dropped]
        self._purged += dropped

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        purged, self._purged = self._purged, []
        for message in purged:
            code = KafkaError._PURGE_INFLIGHT if message.in_flight else KafkaError._PURGE_QUEUE
            message.report(KafkaError(code), None)
        if self._broker.acknowledges:
            delivered, self._messages = self._messages, []
            for message in delivered:
                self._broker.written.append(message.value)
                message.report(None, None)
        return len(self._messages)

    def list_topics(self, timeout: float = -1) -> None:
        if not self._broker.answers:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    def __len__(self) -> int:
        return len(self._messages) + len(self._purged)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    """The broker every producer the test starts (renewals too) reaches."""
    reached = Broker()
    monkeypatch.setattr(producer_module, "Producer", partial(StandInProducer, reached))
    return reached


@pytest.fixture
def finished_job(engine: Engine) -> str:
    """A completed job not announced yet."""
    job_id = new_id("job-")
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=job_id, client_id="c", status="completed", total_lots=1,
                                         processed_lots=1, created_at=datetime.now(UTC),
                                         completed_at=datetime.now(UTC), usage={}))
    return job_id


def _round(engine: Engine, producer: EventProducer, job_id: str) -> None:
    """One announcement attempt, as the handler and the sweeps make them (they retry on failure)."""
    with suppress(PublishError):
        publish_completions(engine, producer, TOPIC, [job_id])


def test_a_job_whose_copy_an_outage_purged_late_stays_unannounced_and_is_sent_again(
        engine: Engine, broker: Broker, finished_job: str) -> None:
    # The second round found the job's copy still held (its purge not reported yet), sent none,
    # and its flush served the purge: nothing queued, so the job was marked with no copy anywhere
    # and its webhooks never went out.
    producer = EventProducer(KafkaSettings(), new_id("result-store-"))
    with pytest.raises(PublishError):
        publish_completions(engine, producer, TOPIC, [finished_job])  # the wait ends in the outage
    _round(engine, producer, finished_job)  # Kafka still down
    assert not job_published(engine, finished_job), "marked announced with no copy in Kafka"
    broker.answers = broker.acknowledges = True
    assert publish_completions(engine, producer, TOPIC, [finished_job]) == 1
    assert job_published(engine, finished_job)
    assert broker.announced() == [finished_job]


def test_a_job_whose_copy_a_renewed_producer_dropped_stays_unannounced_and_is_sent_again(
        engine: Engine, broker: Broker, finished_job: str) -> None:
    # The renewal dropped the old librdkafka producer with the copy in flight, its report never
    # served; the job stayed held, was sent no more, and the new producer's empty flush marked it.
    broker.answers = True  # but never acknowledges: the producer stalls and is renewed
    producer = EventProducer(KafkaSettings(producer_stall_s=0), new_id("result-store-"))
    _round(engine, producer, finished_job)
    _round(engine, producer, finished_job)
    assert producer.generation == 1, "the stalled producer was not renewed"
    _round(engine, producer, finished_job)
    assert not job_published(engine, finished_job), "marked announced with no copy in Kafka"
    broker.acknowledges = True
    assert publish_completions(engine, producer, TOPIC, [finished_job]) == 1
    assert job_published(engine, finished_job)
    assert broker.announced() == [finished_job]


def test_a_job_whose_copy_was_never_queued_is_sent_by_the_next_round(
        engine: Engine, broker: Broker, finished_job: str) -> None:
    # Held though librdkafka refused it, the copy was waited for by every later round, for good.
    broker.answers = broker.acknowledges = True
    broker.refusals = 1
    producer = EventProducer(KafkaSettings(), new_id("result-store-"))
    with pytest.raises(KafkaException):
        publish_completions(engine, producer, TOPIC, [finished_job])
    _round(engine, producer, finished_job)
    assert job_published(engine, finished_job), "never sent again"
    assert broker.announced() == [finished_job]
