"""The result-store carries on after its database vanished without a word (a failover's old
primary, its sessions gone with it): its connection fails instead of hanging, the consumer loop
retries the batch as it retries any transient failure, and the pool's new connection reaches the
new primary."""

from __future__ import annotations

from collections.abc import Collection

import pytest
from sqlalchemy import Connection, Engine

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store import handlers
from lotlens_result_store.completion import refresh_cancelled_usage
from tests.conftest import Infra
from tests.dark_path import QUICK_DETECTION, DarkPath, engine_across
from tests.integration.result_store.support import (
    assert_job_finished,
    consuming,
    job_published,
    job_script,
    publish,
)
from tests.polling import wait_for

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


def test_a_batch_the_database_vanished_under_finishes_on_the_new_primary(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings, database_path: DarkPath,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The path went dark inside the batch's transaction, after it had locked its job; the retry, on
    # a new connection, must not wait behind the vanished session. (The harness kept that session
    # open with its locks, which a failover does not: the test above failed now and then in full
    # runs, when the echo of its first job's JobCompleted was in flight as the path went dark.)
    job = job_script(3)
    def going_dark_midway(conn: Connection, job_ids: Collection[str]) -> None:
        if job.job_id in job_ids and not database_path.dark:
            database_path.go_dark()  # the job's lock and its first rows are on the server
        refresh_cancelled_usage(conn, job_ids)

    monkeypatch.setattr(handlers, "refresh_cancelled_usage", going_dark_midway)
    across_path = engine_across(database_path, infra.database_url, **QUICK_DETECTION)
    try:
        with consuming(settings, across_path, producer):
            publish(publisher, topics, job)
            wait_for(lambda: job_published(engine, job.job_id), timeout_s=30,
                     what="the job whose batch the database vanished under")
        assert database_path.dark
        assert_job_finished(engine, job)
    finally:
        across_path.dispose()
