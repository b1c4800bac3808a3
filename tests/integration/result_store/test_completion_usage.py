"""What a webhook dispatcher reads of a job once its `JobCompleted` is out: the job's usage too."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled, JobCompleted, TranslationCompleted, VisionCompleted
from lotlens_common.model.usage import Usage
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store.handlers import handle
from lotlens_result_store.usage import job_usage
from lotlens_webhook_dispatcher.finished_jobs import FinishedJobs
from tests.conftest import Infra
from tests.integration.result_store.support import completions, job_row, job_script
from tests.integration.webhook_dispatcher.support import KafkaDown

pytestmark = pytest.mark.integration


class ReadOnAcknowledgement(EventProducer):
    """The result-store's producer, and a dispatcher reading each announced job as soon as Kafka
    has acknowledged the announcement (what it can read from then on)."""

    def __init__(self, settings: ServiceSettings, engine: Engine) -> None:
        super().__init__(settings.kafka, "result-store-test")
        self.engine = engine
        self.published: list[str] = []
        self.read: dict[str, Any] = {}

    def publish(self, topic: str, envelope: Envelope, *args: Any, **kwargs: Any) -> None:
        if isinstance(envelope.event, JobCompleted):
            self.published.append(envelope.event.job_id)
        super().publish(topic, envelope, *args, **kwargs)

    def flush(self, timeout_s: float = 30.0) -> None:
        super().flush(timeout_s)
        for job_id in self.published:
            job = FinishedJobs(self.engine).job(job_id)
            self.read[job_id] = job.usage if job is not None else "not in the read models"
        self.published.clear()


def test_a_cancelled_jobs_usage_is_readable_once_its_completion_is_announced(
        settings: ServiceSettings, engine: Engine, infra: Infra, topics: TopicSettings) -> None:
    # A cancelled job's usage was summed and written in the transaction that marks the job
    # announced, committed only after Kafka acknowledged JobCompleted: a dispatcher that read the
    # job in between sent `processing_summary` without `usage`, and kept the job so (its cache of
    # finished jobs never expires) for every later attempt and redelivery.
    producer = ReadOnAcknowledgement(settings, engine)
    apply = partial(handle, engine, producer, topics.completions)
    script = job_script(3)
    spent = Usage(input_tokens=1000, output_tokens=200, estimated_cost_usd=0.002, model="o4-mini")
    cancel = Envelope(client_id=script.client_id, event=JobCancelled(
        job_id=script.job_id, cancelled_at=datetime(2026, 3, 1, 0, 5, tzinfo=UTC)))
    with_usage = [Envelope(event=e.event.model_copy(update={"usage": spent}), client_id=e.client_id,
                           occurred_at=e.occurred_at)
                  if isinstance(e.event, VisionCompleted | TranslationCompleted) else e
                  for e in script.vision[:2]]
    apply(script.submissions + with_usage)
    apply([cancel])
    [announced] = completions(infra, topics, script.job_id)
    assert isinstance(announced.event, JobCompleted) and announced.event.status == "cancelled"
    assert announced.event.usage is not None
    usage = announced.event.usage.model_dump(mode="json")
    assert producer.read == {script.job_id: usage}
    assert job_row(engine, script.job_id)["usage"] == usage


def test_a_cancelled_jobs_announcement_retried_later_carries_the_lots_finished_meanwhile(
        settings: ServiceSettings, engine: Engine, infra: Infra, topics: TopicSettings) -> None:
    # The first attempt summed the cancelled job's usage and committed it, then Kafka did not
    # answer; the retry summed only jobs without a usage, so a lot whose answer (already paid)
    # was projected in between was in the read models' lots but not in JobCompleted or the webhook.
    producer = ReadOnAcknowledgement(settings, engine)
    kafka_down = KafkaDown(settings.kafka, "result-store-test")
    script = job_script(3)
    spent = Usage(input_tokens=1000, output_tokens=200, estimated_cost_usd=0.002, model="o4-mini")
    described = [Envelope(event=e.event.model_copy(update={"usage": spent}), client_id=e.client_id,
                          occurred_at=e.occurred_at)
                 for e in script.vision if isinstance(e.event, VisionCompleted)]
    cancel = Envelope(client_id=script.client_id, event=JobCancelled(
        job_id=script.job_id, cancelled_at=datetime(2026, 3, 1, 0, 5, tzinfo=UTC)))
    handle(engine, producer, topics.completions, script.submissions + described[:1])
    with pytest.raises(PublishError):
        handle(engine, kafka_down, topics.completions, [cancel])
    assert not completions(infra, topics, script.job_id)
    # The answer of a lot already in OpenAI's batch, projected before the announcement's retry.
    handle(engine, producer, topics.completions, described[1:2])

    [announced] = completions(infra, topics, script.job_id)
    assert isinstance(announced.event, JobCompleted) and announced.event.usage is not None
    usage = announced.event.usage.model_dump(mode="json")
    with engine.connect() as conn:
        [of_the_lots] = job_usage(conn, [script.job_id]).values()
    assert usage == of_the_lots.model_dump(mode="json"), "JobCompleted's usage is not the lots'"
    assert announced.event.usage.input_tokens == 2 * spent.input_tokens
    assert producer.read == {script.job_id: usage}, "the webhook reads another usage"
    assert job_row(engine, script.job_id)["usage"] == usage


def test_a_cancelled_jobs_usage_counts_the_paid_answers_that_came_after_its_announcement(
        settings: ServiceSettings, engine: Engine, infra: Infra, topics: TopicSettings) -> None:
    # A cancelled job is announced at once; its lots already in OpenAI's batches still get their
    # answers, billed. They reached the lots' usage but the job's stayed as announced, so
    # batch-status and batch-results showed less than the job's lots (and OpenAI's bill) said.
    producer = EventProducer(settings.kafka, "result-store-test")
    script = job_script(3)
    spent = Usage(input_tokens=1000, output_tokens=200, estimated_cost_usd=0.002, model="o4-mini")
    translated = Usage(input_tokens=300, output_tokens=400, estimated_cost_usd=0.001, model="gpt-4.1-mini")
    described = [Envelope(event=e.event.model_copy(update={"usage": spent}), client_id=e.client_id,
                          occurred_at=e.occurred_at)
                 for e in script.vision if isinstance(e.event, VisionCompleted)]
    [late_translation] = [Envelope(event=e.event.model_copy(update={"usage": translated}),
                                   client_id=e.client_id, occurred_at=e.occurred_at)
                          for e in script.translation if isinstance(e.event, TranslationCompleted)][:1]
    cancel = Envelope(client_id=script.client_id, event=JobCancelled(
        job_id=script.job_id, cancelled_at=datetime(2026, 3, 1, 0, 5, tzinfo=UTC)))
    handle(engine, producer, topics.completions, script.submissions + described[:1])
    handle(engine, producer, topics.completions, [cancel])
    [announced] = completions(infra, topics, script.job_id)
    assert isinstance(announced.event, JobCompleted) and announced.event.usage is not None
    assert announced.event.usage.input_tokens == spent.input_tokens

    handle(engine, producer, topics.completions, [*described[1:], late_translation])
    with engine.connect() as conn:
        [of_the_lots] = job_usage(conn, [script.job_id]).values()
    assert of_the_lots.input_tokens == 3 * spent.input_tokens + translated.input_tokens
    assert job_row(engine, script.job_id)["usage"] == of_the_lots.model_dump(mode="json")
    assert len(completions(infra, topics, script.job_id)) == 1  # announced once, as before
