"""Events at the contract's largest, many at once, through Kafka into the result-store's tables."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from lotlens_common.envelope import Envelope
from lotlens_common.events import VisionCompleted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_common.tables import lots
from lotlens_common.urls import MAX_URL_LENGTH
from tests.conftest import new_id
from tests.integration.result_store.support import consuming
from tests.polling import wait_for

pytestmark = pytest.mark.integration

LOTS_PER_JOB, JOBS = 56, 5


def _listing_missing_images(engine: Engine, job_ids: list[str]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(lots).where(
            lots.c.job_id.in_(job_ids), func.jsonb_array_length(lots.c.missing_images) > 0)).scalar_one())


def test_a_backlog_of_lots_each_missing_a_megabyte_of_images_is_projected(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        topics: TopicSettings) -> None:
    # A lot's JSON holds up to 1 MiB (LOTLENS_MAX_LOT_BYTES): 126 image URLs of the longest
    # length, all unreachable but one. Five 64 MiB jobs of them are 290 MB of VisionCompleted, which
    # a result-store back from an outage read in one batch and wrote in one statement: PostgreSQL
    # refused it (a jsonb value holds at most 256 MB), and the refusal, an OperationalError, was
    # retried as an outage for good. No job behind it moved again.
    missing = tuple(f"https://img.example.com/{n:04d}/".ljust(MAX_URL_LENGTH - 4, "x") + ".jpg"
                    for n in range(126))
    job_ids = [new_id("job-") for _ in range(JOBS)]
    for job_id in job_ids:
        publisher.publish_many(topics.vision, (Envelope(client_id="c", event=VisionCompleted(
            job_id=job_id, lot_id=f"lot-{i}", english_html="<p>Car</p>", languages=("en",),
            total_lots=LOTS_PER_JOB, processed_images=1, missing_images=missing))
            for i in range(LOTS_PER_JOB)))
    publisher.flush()
    # A consume call gathers the whole backlog here (a longer wait than the default 0.2 s makes
    # that certain; a fast broker gathers as much in less).
    gathering = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"consume_batch_timeout_s": 5.0})})
    with consuming(gathering, engine, producer):
        wait_for(lambda: _listing_missing_images(engine, job_ids) == JOBS * LOTS_PER_JOB, timeout_s=240,
                 what="every lot's missing images projected")
