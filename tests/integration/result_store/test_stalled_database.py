"""The result-store when PostgreSQL stalls rather than fails. Behind a locked read model (an
operator's fix in an open transaction, a long migration) its batch's statement gives up after the
worker lock timeout, the consumer loop retries it as any transient failure (saying why, its
heartbeat beating), and once the lock goes the job is applied exactly once. Its sessions ended by
`pg_terminate_backend` (an operator, a failover), it carries on by itself. Nothing dead-lettered."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from lotlens_common.db import make_engine
from lotlens_common.producer import EventProducer
from lotlens_common.settings import DatabaseSettings, ServiceSettings, TopicSettings
from tests.conftest import Infra, new_id
from tests.integration.result_store.support import (
    assert_job_finished,
    consuming,
    job_published,
    job_script,
    publish,
    read_topic,
)
from tests.polling import wait_for
from tests.stalls import tables_locked, terminate_sessions

pytestmark = pytest.mark.integration


def test_a_batch_behind_a_locked_jobs_table_is_retried_and_applied_once_when_the_lock_goes(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings, caplog: pytest.LogCaptureFixture) -> None:
    # The service's engine, as its `__main__` builds it, with a short lock timeout.
    database = DatabaseSettings(DATABASE_URL=infra.database_url, DATABASE_WORKER_LOCK_TIMEOUT_MS=300)
    worker = make_engine(database, "result-store", limits=database.worker_limits())
    script = job_script(3, failed=[1])
    try:
        with consuming(settings, worker, producer):
            with tables_locked(infra.database_url, "jobs"):
                publish(publisher, topics, script)
                wait_for(lambda: _lock_timeouts(caplog) >= 2,
                         what="the batch retried twice, each after the lock timeout, while `jobs` was locked")
            wait_for(lambda: job_published(engine, script.job_id), what="the job, once the lock went")
    finally:
        worker.dispose()
    assert_job_finished(engine, script)
    assert read_topic(infra, topics.dead_letter, timeout_s=5) == []


def test_the_result_store_carries_on_after_its_sessions_are_terminated(
        engine: Engine, settings: ServiceSettings, producer: EventProducer, publisher: EventProducer,
        infra: Infra, topics: TopicSettings) -> None:
    sessions = new_id("lotlens-result-store-")
    database = DatabaseSettings(DATABASE_URL=f"{infra.database_url}?application_name={sessions}")
    worker = make_engine(database, "result-store", limits=database.worker_limits())
    before, after = job_script(3), job_script(3, failed=[0])
    try:
        with consuming(settings, worker, producer):
            publish(publisher, topics, before)
            wait_for(lambda: job_published(engine, before.job_id), what="the first job")
            assert terminate_sessions(infra.database_url, sessions) > 0
            publish(publisher, topics, after)
            wait_for(lambda: job_published(engine, after.job_id), what="the job sent after the terminations")
    finally:
        worker.dispose()
    assert_job_finished(engine, before)
    assert_job_finished(engine, after)
    assert read_topic(infra, topics.dead_letter, timeout_s=5) == []


def _lock_timeouts(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for record in caplog.records
               if "transient failure" in record.getMessage() and "lock timeout" in record.getMessage())
