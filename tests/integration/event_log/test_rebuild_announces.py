"""A rebuild that finishes jobs the live tables left unfinished: the running result-store (its own
process, as deployed) announces them with `JobCompleted` once the rebuilt tables are swapped in,
with no restart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from lotlens_common.envelope import Envelope
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store import handlers
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.rebuild import RebuildOptions, rebuild
from tests.conftest import Infra, new_id
from tests.integration.admin_support import admin_env
from tests.integration.event_log.support import live_result_store
from tests.integration.result_store.support import (
    completions,
    consuming,
    job_row,
    job_script,
    publish,
    read_topic,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_a_job_the_rebuild_finishes_is_announced_by_the_running_store_without_a_restart(
        own_engine: Engine, own_settings: ServiceSettings, own_database: str, producer: EventProducer,
        publisher: EventProducer, topics: TopicSettings, infra: Infra, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    # The rebuilt tables held the job completed and unannounced; only a consumer batch touching
    # the job or the start-up sweep announce one, so nothing did until the next restart: no
    # webhook, nothing downstream.
    script = job_script(2)
    last = script.translation[-1]  # the TranslationCompleted that finishes the job
    group = new_id("result-store-")
    projected = handlers.project  # type: ignore[attr-defined]  # the name the handler calls

    def projection_bug(conn: Connection, envelopes: Sequence[Envelope]) -> JobChanges:
        if any(envelope.event_id == last.event_id for envelope in envelopes):
            raise ValueError("a projection bug")
        return projected(conn, envelopes)

    with monkeypatch.context() as patched:
        patched.setattr(handlers, "project", projection_bug)
        with consuming(own_settings, own_engine, producer, group_id=group):
            publish(publisher, topics, script)
            wait_for(lambda: len(read_topic(infra, topics.dead_letter)) == 1, timeout_s=60,
                     what="the dead-lettered TranslationCompleted")
    assert job_row(own_engine, script.job_id)["status"] == "translating"

    # The fix is deployed: the result-store restarts on the old tables, then a rebuild replays
    # the log with the fixed projection and swaps its tables in under the running store.
    env = {**admin_env(infra.kafka_bootstrap, own_database, topics), "LOTLENS_GROUP_ID": group}
    log = tmp_path / "result-store.log"
    with live_result_store(env, log):
        done = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None)
        assert done.swapped and job_row(own_engine, script.job_id)["status"] == "completed"
        try:
            wait_for(lambda: bool(completions(infra, topics, script.job_id)), timeout_s=60,
                     what="JobCompleted of the job the rebuild finished")
            wait_for(lambda: job_row(own_engine, script.job_id)["completion_published"], timeout_s=30,
                     what="the job marked announced")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the result-store said:\n{log.read_text()[-3000:]}") from None
    [announced] = completions(infra, topics, script.job_id)
    assert (announced.event.status, announced.event.processed_lots) == ("completed", 2)  # type: ignore[attr-defined]
