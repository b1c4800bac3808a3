"""The result-store carries on after its database vanished without a word (a failover's old
primary, a dropped NAT entry): its connection fails instead of hanging, the consumer loop retries
the batch as it retries any transient failure, and the pool's new connection reaches the new
primary."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from tests.conftest import Infra
from tests.dark_path import QUICK_DETECTION, DarkPath, engine_across
from tests.integration.result_store.support import (
    assert_job_finished,
    consuming,
    job_published,
    job_script,
    publish,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_the_result_store_finishes_jobs_again_once_its_database_vanished(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings, database_path: DarkPath) -> None:
    before, after = job_script(3, failed=[1]), job_script(3)
    across_path = engine_across(database_path, infra.database_url, **QUICK_DETECTION)
    try:
        with consuming(settings, across_path, producer):
            publish(publisher, topics, before)
            wait_for(lambda: job_published(engine, before.job_id), what="the first job, on the lit path")
            database_path.go_dark()  # the consumer's pooled connections are lost in the dark
            publish(publisher, topics, after)
            wait_for(lambda: job_published(engine, after.job_id), timeout_s=30,
                     what="the job sent after the database vanished")
        assert_job_finished(engine, after)
    finally:
        across_path.dispose()
