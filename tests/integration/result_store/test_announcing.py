"""A defect announcing one job (building or publishing its `JobCompleted` after its projection
committed) on a real broker and database: the applied events stay applied, not dead-lettered,
the other jobs are announced, and the service still starts."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import Event
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store import completion
from lotlens_result_store.sweeps import sweep
from tests.conftest import Infra
from tests.integration.result_store.support import (
    completions,
    consuming,
    job_published,
    job_row,
    job_script,
    publish,
    read_topic,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_a_defect_announcing_a_job_dead_letters_none_of_its_events_and_stops_no_start(
        settings: ServiceSettings, engine: Engine, producer: EventProducer, publisher: EventProducer,
        topics: TopicSettings, infra: Infra, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The failure reached the consumer loop as the batch's: its events, applied and committed,
    # were dead-lettered `handler-failed` (a replay changes nothing), and the startup sweep,
    # which retried only outages, raised it at every start: the service could not start.
    bad, good = job_script(2), job_script(2)
    caused = completion.caused  # type: ignore[attr-defined]  # the name the module calls

    def defect(event: Event, client_id: str, cause: str) -> Envelope:
        if event.job_id == bad.job_id:
            raise ValueError("a defect building JobCompleted")
        return caused(event, client_id, cause)

    monkeypatch.setattr(completion, "caused", defect)
    caplog.set_level(logging.ERROR)
    with consuming(settings, engine, producer):
        publish(publisher, topics, bad)
        publish(publisher, topics, good)
        wait_for(lambda: job_published(engine, good.job_id), timeout_s=60, what="the other job announced")
        wait_for(lambda: bad.job_id in caplog.text or bool(read_topic(infra, topics.dead_letter)),
                 timeout_s=60, what="the defect reported")
    assert read_topic(infra, topics.dead_letter) == [], "applied events were dead-lettered"
    assert job_row(engine, bad.job_id)["status"] == "completed"
    assert not job_published(engine, bad.job_id)

    # A start with the defect still there (the database is shared: other tests' jobs may be
    # announced by the sweep too, so only this job is looked at).
    sweep(engine, producer, topics.completions, threading.Event())
    assert not completions(infra, topics, bad.job_id) and not job_published(engine, bad.job_id)

    monkeypatch.setattr(completion, "caused", caused)  # the fix deployed: its start announces the job
    sweep(engine, producer, topics.completions, threading.Event())
    assert len(completions(infra, topics, bad.job_id)) == 1 and job_published(engine, bad.job_id)
