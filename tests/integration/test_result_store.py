"""The result-store against real PostgreSQL and Kafka: projections, completion, crash safety.

Most tests drive the batch handler directly with envelopes (fast); the rest go through Kafka with
the real consumer loop, in a thread or as the service's own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from sqlalchemy import Engine, func, insert, select, update

from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import (
    Event,
    JobCancelled,
    JobCompleted,
    JobSubmitted,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
    WebhookAttempted,
    WebhookDelivered,
    WebhookFailed,
)
from lotlens_common.kafka import ConsumerSpec, EventProducer, run_consumer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_common.tables import (
    descriptions,
    jobs,
    lots,
    openai_batches,
    webhook_attempts,
    webhook_deliveries,
)
from lotlens_result_store.__main__ import TRANSIENT
from lotlens_result_store.completion import publish_completions
from lotlens_result_store.handlers import handle
from tests.conftest import ROOT, Infra, new_id

pytestmark = pytest.mark.integration

LANGUAGES = ("en", "ru")
IMAGES_PER_LOT = 3  # one of them is unreachable in every lot
HOOK = "https://hooks.example.com/lotlens"
Apply = Callable[[Sequence[Envelope]], None]


# --- a job's events, as the other services would publish them ---

@dataclass
class JobScript:
    """Every event of one job, per topic, in the order the stages emit them."""

    job_id: str
    client_id: str
    lot_ids: list[str]
    failed: set[str]
    submissions: list[Envelope] = field(default_factory=list)
    vision: list[Envelope] = field(default_factory=list)
    translation: list[Envelope] = field(default_factory=list)

    @property
    def completed(self) -> list[str]:
        """The lots that get a description."""
        return [lot_id for lot_id in self.lot_ids if lot_id not in self.failed]

    def all_events(self) -> list[Envelope]:
        """Submissions, then vision, then translation."""
        return self.submissions + self.vision + self.translation


def job_script(lot_count: int = 3, failed: Sequence[int] = (), languages: Sequence[str] = LANGUAGES
               ) -> JobScript:
    """A job whose lots at the positions in `failed` fail at the vision stage."""
    job_id, client_id = new_id("job-"), new_id("client-")
    lot_ids = [f"lot-{i:05d}" for i in range(lot_count)]
    script = JobScript(job_id, client_id, lot_ids, {lot_ids[i] for i in failed})
    clock = iter(datetime(2026, 3, 1, tzinfo=UTC) + timedelta(milliseconds=i) for i in range(10**7))

    def envelope(event: Event) -> Envelope:
        return Envelope(event=event, client_id=client_id, occurred_at=next(clock))

    created = datetime(2026, 3, 1, tzinfo=UTC)
    script.submissions.append(envelope(JobSubmitted(
        job_id=job_id, client_id=client_id, api_version="2.0", languages=tuple(languages),
        total_lots=lot_count, webhook_urls=(HOOK,), created_at=created,
        estimated_completion=created + timedelta(hours=2))))
    for seq, lot_id in enumerate(lot_ids):
        script.submissions.append(envelope(LotSubmitted(
            job_id=job_id, lot_id=lot_id, seq=seq, total_lots=lot_count, additional_info=f"car {seq}",
            image_urls=tuple(f"https://img.example.com/{lot_id}/{i}.jpg" for i in range(IMAGES_PER_LOT)),
            languages=tuple(languages), webhook=HOOK)))
    script.vision.append(envelope(VisionBatchSubmitted(
        job_id=job_id, shard_id=f"{job_id}-v1", attempt=1, batch_id=new_id("batch_"),
        lot_ids=tuple(lot_ids))))
    for lot_id in lot_ids:
        broken = f"https://img.example.com/{lot_id}/0.jpg"
        if lot_id in script.failed:
            script.vision.append(envelope(LotFailed(
                job_id=job_id, lot_id=lot_id, stage="vision", total_lots=lot_count,
                reason="none of the lot's 3 images could be fetched", missing_images=(broken,))))
        else:
            script.vision.append(envelope(VisionCompleted(
                job_id=job_id, lot_id=lot_id, english_html=f"<p>{lot_id}</p>", languages=tuple(languages),
                total_lots=lot_count, processed_images=IMAGES_PER_LOT - 1, missing_images=(broken,))))
    if script.completed:
        script.translation.append(envelope(TranslationBatchSubmitted(
            job_id=job_id, shard_id=f"{job_id}-t1", attempt=1, batch_id=new_id("batch_"),
            lot_ids=tuple(script.completed))))
    for lot_id in script.completed:
        script.translation.append(envelope(TranslationCompleted(
            job_id=job_id, lot_id=lot_id,
            descriptions={language: f"<p>{lot_id} {language}</p>" for language in languages})))
    return script


# --- reading the results ---

def job_row(engine: Engine, job_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().one()
    return dict(row)


def lot_rows(engine: Engine, job_id: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(lots).where(lots.c.job_id == job_id)).mappings().all()
    return {row["lot_id"]: dict(row) for row in rows}


def count(engine: Engine, table: Any, job_column: Any, job_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(job_column == job_id))
                   .scalar_one())


def assert_job_finished(engine: Engine, script: JobScript) -> None:
    """The read models hold exactly what the job's events say, each lot counted once."""
    job = job_row(engine, script.job_id)
    done, failed = len(script.completed), len(script.failed)
    assert job["status"] == ("completed" if done else "failed")
    counters = (job["total_lots"], job["processed_lots"], job["failed_lots"])
    assert counters == (len(script.lot_ids), done, failed)
    assert job["images_processed"] == done * (IMAGES_PER_LOT - 1)
    assert job["client_id"] == script.client_id
    assert job["languages"] == list(LANGUAGES)
    assert job["webhook_configured"] is True
    assert job["completed_at"] is not None
    assert job["completion_published"] is True
    rows = lot_rows(engine, script.job_id)
    assert sorted(rows) == script.lot_ids
    for seq, lot_id in enumerate(script.lot_ids):
        lot = rows[lot_id]
        assert (lot["seq"], lot["additional_info"], lot["webhook"]) == (seq, f"car {seq}", HOOK)
        assert len(lot["image_urls"]) == IMAGES_PER_LOT
        assert lot["missing_images"] == [f"https://img.example.com/{lot_id}/0.jpg"]
        assert lot["processed_at"] is not None
        if lot_id in script.failed:
            assert (lot["status"], lot["processed_images"]) == ("failed", 0)
            assert "could be fetched" in lot["error_message"]
        else:
            assert (lot["status"], lot["processed_images"]) == ("completed", IMAGES_PER_LOT - 1)
    assert count(engine, descriptions, descriptions.c.job_id, script.job_id) == done * len(LANGUAGES)


def read_topic(infra: Infra, topic: str, timeout_s: float = 30.0) -> list[Message]:
    """Every message the topic holds now (up to each partition's high watermark), no group needed."""
    consumer = Consumer({"bootstrap.servers": infra.kafka_bootstrap, "group.id": new_id("reader-"),
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in ends])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            messages.append(message)
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None and offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
        assert not ends, f"could not read {topic} to its end"
        return messages
    finally:
        consumer.close()


def completions(infra: Infra, topics: TopicSettings, job_id: str) -> list[Envelope]:
    """The JobCompleted events published for one job."""
    found = [decode(m.value() or b"") for m in read_topic(infra, topics.completions)]
    return [envelope for envelope in found if envelope.job_id == job_id]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job_published(engine: Engine, job_id: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(jobs.c.completion_published).where(jobs.c.job_id == job_id))
                    .scalar_one_or_none())


# --- fixtures ---

@pytest.fixture()
def producer(settings: ServiceSettings) -> Iterator[EventProducer]:
    """The producer the result-store publishes JobCompleted with."""
    service_producer = EventProducer(settings.kafka, "result-store-test")
    yield service_producer
    service_producer.flush()


@pytest.fixture()
def apply(engine: Engine, producer: EventProducer, topics: TopicSettings) -> Apply:
    """The batch handler, wired like the service wires it."""
    return partial(handle, engine, producer, topics.completions)


@pytest.fixture()
def publisher(settings: ServiceSettings) -> EventProducer:
    """A producer standing in for the other services."""
    return EventProducer(settings.kafka, "pipeline-test")


def publish(publisher: EventProducer, topics: TopicSettings, script: JobScript) -> None:
    publisher.publish_many(topics.submissions, script.submissions)
    publisher.publish_many(topics.vision, script.vision)
    publisher.publish_many(topics.translation, script.translation)
    publisher.flush()


@contextmanager
def consuming(settings: ServiceSettings, engine: Engine, producer: EventProducer,
              group_id: str | None = None) -> Iterator[None]:
    """The result-store's consumer loop in a thread, stopped on exit."""
    stop = threading.Event()
    topics = settings.topics
    spec = ConsumerSpec(group_id=group_id or new_id("result-store-"),
                        topics=[topics.submissions, topics.vision, topics.translation, topics.webhooks],
                        handler=partial(handle, engine, producer, topics.completions), transient=TRANSIENT)
    thread = threading.Thread(target=run_consumer, args=(settings.kafka, topics, spec, producer, stop),
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


# --- the handler, driven directly ---

def test_a_three_lot_job_is_projected_and_announced_exactly_once(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    apply(script.submissions)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["total_lots"], job["processed_lots"]) == ("pending", 3, 0)
    apply(script.vision)
    assert job_row(engine, script.job_id)["status"] == "processing"
    assert {lot["status"] for lot in lot_rows(engine, script.job_id).values()} == {"translating"}
    apply(script.translation[:2])
    job = job_row(engine, script.job_id)
    assert (job["status"], job["processed_lots"]) == ("translating", 1)
    apply(script.translation[2:])

    assert_job_finished(engine, script)
    assert count(engine, openai_batches, openai_batches.c.job_id, script.job_id) == 2
    [announced] = completions(infra, topics, script.job_id)
    event = announced.event
    assert isinstance(event, JobCompleted)
    assert (event.status, event.total_lots, event.processed_lots, event.failed_lots) == ("completed", 3, 3, 0)
    assert announced.client_id == script.client_id
    assert event.completed_at == job_row(engine, script.job_id)["completed_at"]


def test_the_gateways_pending_row_is_completed_by_job_submitted(engine: Engine, apply: Apply) -> None:
    script = job_script(2)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=script.job_id, client_id=script.client_id, status="pending",
                                         total_lots=2, languages=list(LANGUAGES)))
    apply(script.submissions)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["api_version"], job["webhook_configured"]) == ("pending", "2.0", True)
    assert job["estimated_completion"] is not None


def test_duplicated_and_out_of_order_events_give_the_same_state(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(4, failed=[2])
    # The translation topic first, then vision, then submissions; every event twice, sometimes in
    # the same batch and sometimes in another one.
    backwards = script.translation + script.vision + script.submissions
    apply(backwards + backwards[:5])
    for i in range(0, len(backwards), 3):
        apply(backwards[i:i + 3])
    assert_job_finished(engine, script)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_job_is_not_announced_before_its_lot_submissions_are_projected(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    apply(script.translation + script.vision)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["total_lots"], job["processed_lots"]) == ("translating", 3, 3)
    apply(script.submissions[:3])
    assert job_row(engine, script.job_id)["status"] == "translating"
    apply(script.submissions[3:])
    assert_job_finished(engine, script)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_job_waits_for_the_vision_results_of_lots_translated_first(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    apply(script.submissions)
    apply(script.translation)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["processed_lots"], job["images_processed"]) == ("translating", 3, 0)
    apply(script.vision[:2])
    job = job_row(engine, script.job_id)
    assert (job["status"], job["images_processed"]) == ("translating", IMAGES_PER_LOT - 1)
    apply(script.vision)
    apply(script.vision)
    assert_job_finished(engine, script)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_failed_lot_is_counted_and_keeps_its_reason(engine: Engine, apply: Apply) -> None:
    script = job_script(3, failed=[1])
    apply(script.all_events())
    apply(script.vision)  # the failure again: still counted once
    assert_job_finished(engine, script)
    assert job_row(engine, script.job_id)["error_message"] is None


def test_a_job_whose_every_lot_failed_fails(engine: Engine, apply: Apply, infra: Infra,
                                            topics: TopicSettings) -> None:
    script = job_script(3, failed=[0, 1, 2])
    apply(script.all_events())
    assert_job_finished(engine, script)
    job = job_row(engine, script.job_id)
    assert job["error_message"] == "all 3 lots failed"
    [announced] = completions(infra, topics, script.job_id)
    assert isinstance(announced.event, JobCompleted) and announced.event.status == "failed"


def test_a_cancelled_job_stays_cancelled_and_is_announced_once(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    cancelled_at = datetime(2026, 3, 1, 0, 5, tzinfo=UTC)
    cancel = Envelope(client_id=script.client_id,
                      event=JobCancelled(job_id=script.job_id, cancelled_at=cancelled_at))
    apply(script.submissions + script.vision[:2])
    apply([cancel])
    apply(script.vision + script.translation + [cancel])
    job = job_row(engine, script.job_id)
    assert (job["status"], job["cancelled_at"]) == ("cancelled", cancelled_at)
    assert job["processed_lots"] == 3  # the lots already paid for are still shown
    [announced] = completions(infra, topics, script.job_id)
    event = announced.event
    assert isinstance(event, JobCompleted)
    assert (event.status, event.completed_at) == ("cancelled", cancelled_at)


def test_a_job_status_never_moves_backwards(engine: Engine, apply: Apply) -> None:
    script = job_script(3)
    apply(script.submissions)
    apply(script.translation[:1])
    assert job_row(engine, script.job_id)["status"] == "translating"
    apply(script.vision[:1])
    assert job_row(engine, script.job_id)["status"] == "translating"
    apply(script.submissions[:1])
    assert job_row(engine, script.job_id)["status"] == "translating"


def test_a_terminal_job_left_unannounced_is_announced_by_the_startup_sweep(
        engine: Engine, apply: Apply, producer: EventProducer, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(2)
    apply(script.all_events())
    with engine.begin() as conn:  # as if the process died after the commit, before publishing
        conn.execute(update(jobs).where(jobs.c.job_id == script.job_id).values(completion_published=False))
    assert publish_completions(engine, producer, topics.completions) >= 1
    assert job_published(engine, script.job_id)
    assert publish_completions(engine, producer, topics.completions, [script.job_id]) == 0
    announced = completions(infra, topics, script.job_id)
    assert len(announced) == 2
    assert announced[0].event == announced[1].event


def test_webhook_events_record_every_attempt_and_the_final_status(engine: Engine, apply: Apply) -> None:
    job_id, client = new_id("job-"), new_id("client-")
    delivered_id, failed_id = new_id("dlv-"), new_id("dlv-")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)

    def attempt(delivery_id: str, n: int, ok: bool) -> Envelope:
        return Envelope(client_id=client, event=WebhookAttempted(
            job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempt=n,
            attempted_at=t0 + timedelta(seconds=30 * n), succeeded=ok, status_code=200 if ok else 500,
            latency_ms=12.5, error=None if ok else "HTTP 500", response_body="ok" if ok else "boom",
            next_attempt_at=None if ok else t0 + timedelta(seconds=30 * (n + 1))))

    delivered = Envelope(client_id=client, event=WebhookDelivered(
        job_id=job_id, delivery_id=delivered_id, webhook_url=HOOK, attempts=2,
        delivered_at=t0 + timedelta(seconds=60)))
    failed = Envelope(client_id=client, event=WebhookFailed(
        job_id=job_id, delivery_id=failed_id, webhook_url=HOOK, attempts=5,
        failed_at=t0 + timedelta(seconds=150), error="HTTP 500"))
    apply([attempt(delivered_id, 1, False), attempt(delivered_id, 2, True), delivered])
    apply([attempt(failed_id, n, False) for n in range(1, 6)] + [failed])
    # Duplicates and a late first attempt change nothing.
    apply([attempt(delivered_id, 1, False), delivered, attempt(failed_id, 3, False), failed])

    with engine.connect() as conn:
        rows = {row["id"]: row for row in conn.execute(
            select(webhook_deliveries).where(webhook_deliveries.c.batch_job_id == job_id)).mappings()}
        attempts = conn.execute(select(func.count()).select_from(webhook_attempts).where(
            webhook_attempts.c.delivery_id.in_([delivered_id, failed_id]))).scalar_one()
    ok, given_up = rows[delivered_id], rows[failed_id]
    assert (ok["status"], ok["attempt_count"], ok["last_status_code"]) == ("delivered", 2, 200)
    assert ok["delivered_at"] == t0 + timedelta(seconds=60)
    assert ok["error_message"] is None and ok["next_attempt_at"] is None
    assert ok["created_at"] == t0 + timedelta(seconds=30)
    assert (given_up["status"], given_up["attempt_count"]) == ("failed", 5)
    assert given_up["error_message"] == "HTTP 500"
    assert given_up["last_attempt_at"] == t0 + timedelta(seconds=150)
    assert given_up["next_attempt_at"] is None and given_up["delivered_at"] is None
    assert attempts == 7


def test_a_late_attempt_never_reopens_a_delivered_webhook(engine: Engine, apply: Apply) -> None:
    job_id, delivery_id = new_id("job-"), new_id("dlv-")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    apply([Envelope(client_id="c", event=WebhookDelivered(
        job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempts=1, delivered_at=at))])
    apply([Envelope(client_id="c", event=WebhookFailed(
        job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempts=1, failed_at=at, error="late")),
        Envelope(client_id="c", event=WebhookAttempted(
            job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempt=1, attempted_at=at,
            succeeded=True, status_code=200, next_attempt_at=at))])
    with engine.connect() as conn:
        row = conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
                           ).mappings().one()
    assert (row["status"], row["attempt_count"], row["next_attempt_at"]) == ("delivered", 1, None)


# --- through Kafka ---

def test_a_job_through_kafka_survives_poison_messages_duplicates_and_disorder(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3, failed=[0])
    key = script.job_id.encode()
    poison = Envelope(client_id=script.client_id, event=LotSubmitted(
        job_id=script.job_id, lot_id="poison", seq=2**40, total_lots=3, additional_info="",
        image_urls=(), languages=LANGUAGES))  # seq does not fit the column: the insert raises
    # Same key, so the same partition: the events behind the bad ones must still be applied.
    publisher.publish_many(topics.translation, script.translation * 2)
    publisher.publish_many(topics.vision, script.vision)
    publisher.publish(topics.submissions, script.submissions[0])
    publisher.publish_raw(topics.submissions, key, b"\x00not json", [])
    publisher.publish(topics.submissions, poison)
    publisher.publish_many(topics.submissions, script.submissions[1:] + script.submissions)
    publisher.publish_many(topics.vision, script.vision)
    publisher.flush()

    with consuming(settings, engine, producer):
        wait_for(lambda: job_published(engine, script.job_id), what="JobCompleted")
        assert_job_finished(engine, script)
    assert "poison" not in lot_rows(engine, script.job_id)
    dead = read_topic(infra, topics.dead_letter)
    assert len(dead) == 2
    assert all(dict(m.headers() or [])["dlq.topic"] == topics.submissions.encode() for m in dead)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_five_thousand_lot_job_through_kafka(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings) -> None:
    warm_up, script = job_script(2), job_script(5000, failed=range(0, 5000, 100))
    with consuming(settings, engine, producer):
        publish(publisher, topics, warm_up)  # the consumer has joined its group once this is done
        wait_for(lambda: job_published(engine, warm_up.job_id), what="the warm-up job")
        started = time.monotonic()
        publish(publisher, topics, script)
        wait_for(lambda: job_published(engine, script.job_id), timeout_s=60, what="JobCompleted")
        elapsed = time.monotonic() - started
    assert_job_finished(engine, script)
    events = len(script.all_events())
    print(f"\nresult-store: {events} events in {elapsed:.2f}s = {events / elapsed:,.0f} events/s")
    assert len(completions(infra, topics, script.job_id)) == 1


def test_two_instances_sharing_the_partitions_count_every_lot_once_and_announce_once(
        engine: Engine, settings: ServiceSettings, publisher: EventProducer, infra: Infra,
        topics: TopicSettings) -> None:
    # A job's vision and translation partitions may belong to different instances, which then
    # write the same lot and job rows concurrently.
    scripts = [job_script(1500, failed=range(0, 1500, 30))] + [job_script(3, failed=[1]) for _ in range(6)]
    group_id = new_id("result-store-")
    first, second = (EventProducer(settings.kafka, f"result-store-{n}") for n in (1, 2))
    with consuming(settings, engine, first, group_id), consuming(settings, engine, second, group_id):
        for script in scripts:
            publish(publisher, topics, script)
        for script in scripts:
            wait_for(partial(job_published, engine, script.job_id), what=f"JobCompleted of {script.job_id}")
    for script in scripts:
        assert_job_finished(engine, script)
    announced = [decode(m.value() or b"").job_id for m in read_topic(infra, topics.completions)]
    assert sorted(announced) == sorted(script.job_id for script in scripts)


def test_a_killed_and_restarted_service_counts_every_lot_exactly_once(
        engine: Engine, infra: Infra, topics: TopicSettings, publisher: EventProducer,
        tmp_path: Path) -> None:
    scripts = [job_script(2000, failed=range(0, 2000, 50)), job_script(3)]
    for script in scripts:
        publish(publisher, topics, script)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap, "DATABASE_URL": infra.database_url,
           "KAFKA_CONSUME_BATCH_SIZE": "200",
           "LOTLENS_LOG_LEVEL": "WARNING",
           **{f"LOTLENS_TOPIC_{name.upper()}": getattr(topics, name) for name in
              ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}}

    log = tmp_path / "result-store.log"

    def start(group_id: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as stderr:
            return subprocess.Popen([sys.executable, "-m", "lotlens_result_store"], cwd=ROOT, stderr=stderr,
                                    env={**env, "LOTLENS_GROUP_ID": group_id})

    big = scripts[0].job_id
    first = start(new_id("result-store-"))
    try:
        wait_for(lambda: count(engine, lots, lots.c.job_id, big) > 0, what="the first projected lots")
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(10)
    assert not job_published(engine, big), "the job finished before the kill; make it bigger"
    # A new group replays every topic from the start over what the killed run committed (a
    # superset of resuming from its offsets, which would first wait out the dead member's
    # 45 s session timeout).
    second = start(new_id("result-store-"))
    try:
        for script in scripts:
            try:
                wait_for(partial(job_published, engine, script.job_id), timeout_s=40,
                         what=f"JobCompleted of {script.job_id}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the service said:\n{log.read_text()[-3000:]}") from None
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        second.kill()
    assert "Traceback" not in log.read_text(), log.read_text()
    for script in scripts:
        assert_job_finished(engine, script)
        announced = completions(infra, topics, script.job_id)
        assert announced, f"no JobCompleted for {script.job_id}"
        assert all(envelope.event == announced[0].event for envelope in announced)
