"""Helpers of the result-store tests: a job's events as the other services publish them,
read-model reads, and the handler and consumer loop wired like the service wires them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from sqlalchemy import Engine, func, select

from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import (
    Event,
    JobSubmitted,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
)
from lotlens_common.kafka import ConsumerSpec
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_common.tables import (
    descriptions,
    jobs,
    lots,
)
from lotlens_result_store.handlers import handle
from tests.conftest import Infra, new_id
from tests.integration.consumer_loops import consumer_loops

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


def job_script(lot_count: int = 3, failed: Sequence[int] = (), languages: Sequence[str] = LANGUAGES,
               client_id: str | None = None) -> JobScript:
    """A job (of `client_id`, default a new one) whose lots at the positions in `failed` fail at
    the vision stage."""
    job_id, client_id = new_id("job-"), client_id or new_id("client-")
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


def job_published(engine: Engine, job_id: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(jobs.c.completion_published).where(jobs.c.job_id == job_id))
                    .scalar_one_or_none())


def publish(publisher: EventProducer, topics: TopicSettings, script: JobScript) -> None:
    publisher.publish_many(topics.submissions, script.submissions)
    publisher.publish_many(topics.vision, script.vision)
    publisher.publish_many(topics.translation, script.translation)
    publisher.flush()


@contextmanager
def consuming(settings: ServiceSettings, engine: Engine, producer: EventProducer,
              group_id: str | None = None) -> Iterator[None]:
    """The result-store's consumer loop in a thread, stopped on exit."""
    topics = settings.topics
    spec = ConsumerSpec(group_id=group_id or new_id("result-store-"),
                        topics=topics.record_topics(),
                        handler=partial(handle, engine, producer, topics.completions))
    with consumer_loops(settings.kafka, topics, [spec], producer):
        yield
