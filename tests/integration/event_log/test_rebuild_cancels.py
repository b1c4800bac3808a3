"""A rebuild and a cancel the client got 200 for whose `JobCancelled` is still in the gateway's
outbox (the relay behind): the contract says the job ends `cancelled`, even when its last lot
finishes meanwhile (API.md), and docs/EVENT_LOG.md that a replay ends where the live store did.

The live store holds such a job back (`settle_jobs`' accepted cancels); the shadow tables cannot
see the outbox, so the rebuild settled it `completed`, and once swapped in the result-store
announced that: a `completed` webhook for a cancelled job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from lotlens_common.envelope import Envelope
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_common.tables import jobs
from lotlens_result_store.completion import lock_jobs, lock_read_models
from lotlens_result_store.handlers import apply_batch
from lotlens_result_store.rebuild import RebuildOptions, rebuild
from lotlens_result_store.sweeps import announce
from tests.conftest import Infra, new_id
from tests.integration.admin_support import admin_env
from tests.integration.event_log.support import live_result_store
from tests.integration.gateway_support import Gateway, gateway_events, running_gateway
from tests.integration.result_store.support import (
    JobScript,
    completions,
    consuming,
    job_row,
    job_script,
    publish,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


@contextmanager
def gateway_without_relay(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway whose outbox relay is stopped: what it accepts stays in the outbox."""
    with running_gateway(settings, engine) as gateway:
        gateway.deps.relay.stop()
        yield gateway


def last_lot_after_the_live_store(engine: Engine, settings: ServiceSettings, publisher: EventProducer,
                                  client_id: str, group: str) -> tuple[JobScript, Envelope]:
    """A two-lot job of `client_id` the live store projected but for its last lot's translation
    (returned), published after the live store stopped (its row still running)."""
    script = job_script(2, client_id=client_id)
    last = script.translation.pop()
    with consuming(settings, engine, EventProducer(settings.kafka, "result-store-test"), group_id=group):
        publish(publisher, settings.topics, script)
        wait_for(lambda: lots_done(engine, script.job_id) == 1, timeout_s=60,
                 what="the job's first lot projected")
    publisher.publish(settings.topics.translation, last)
    publisher.flush()
    return script, last


def lots_done(engine: Engine, job_id: str) -> int:
    """The job's processed lots in the read models (0 before its row is written)."""
    with engine.connect() as conn:
        return int(conn.execute(select(jobs.c.processed_lots).where(jobs.c.job_id == job_id))
                   .scalar_one_or_none() or 0)


def announced_statuses(infra: Infra, topics: TopicSettings, job_id: str) -> list[str]:
    """The statuses of the job's `JobCompleted` events, in order."""
    return [envelope.event.status for envelope in completions(infra, topics, job_id)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("cancelled", ["before the replay", "between the replay and the swap"])
def test_a_job_cancelled_with_200_before_its_last_lot_is_projected_ends_cancelled_after_a_rebuild(
        cancelled: str, own_engine: Engine, own_settings: ServiceSettings, own_database: str,
        publisher: EventProducer, topics: TopicSettings, infra: Infra, tmp_path: Path) -> None:
    group = new_id("result-store-")
    with gateway_without_relay(own_settings, own_engine) as gateway:
        script, _ = last_lot_after_the_live_store(own_engine, own_settings, publisher, gateway.client_id,
                                                  group)
        if cancelled == "between the replay and the swap":
            # The shadow settles the job `completed` here, the live row still runs.
            rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(swap=False), lambda _: None)
        cancel = gateway.cancel(script.job_id)
        assert cancel.status_code == 200, cancel.text

        done = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None)
        assert done.swapped
        env = {**admin_env(infra.kafka_bootstrap, own_database, topics), "LOTLENS_GROUP_ID": group}
        log = tmp_path / "result-store.log"
        with live_result_store(env, log):
            # The relay catches up: the cancel reaches the log after the swap.
            [cancel_event] = gateway_events(own_engine, script.job_id, "JobCancelled")
            publisher.publish(topics.submissions, cancel_event)
            publisher.flush()
            try:
                wait_for(lambda: bool(completions(infra, topics, script.job_id)), timeout_s=60,
                         what="the job's JobCompleted")
                wait_for(lambda: job_row(own_engine, script.job_id)["completion_published"], timeout_s=30,
                         what="the job marked announced")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the result-store said:\n{log.read_text()[-3000:]}") from None
        status = gateway.get_job("/api/v1/batch-status/{job_id}", script.job_id).json()

    assert announced_statuses(infra, topics, script.job_id) == ["cancelled"]
    assert job_row(own_engine, script.job_id)["status"] == "cancelled"
    assert status["status"] == "cancelled", status


def test_a_job_the_live_store_ended_cancelled_but_had_not_announced_ends_cancelled_after_a_rebuild(
        own_engine: Engine, own_settings: ServiceSettings, publisher: EventProducer, topics: TopicSettings,
        infra: Infra) -> None:
    # The live store committed the batch projecting JobCancelled (its offsets too); its announcement
    # then waited on the rebuild's lock. The swap put the replay's `completed` back to running, as
    # for a cancel still in the outbox, and the live store never reads that JobCancelled again: its
    # announcement found the job running, and the job ran for good, no webhook.
    with gateway_without_relay(own_settings, own_engine) as gateway:
        script, last = last_lot_after_the_live_store(own_engine, own_settings, publisher, gateway.client_id,
                                                     new_id("result-store-"))
        # The replay settles the job `completed`: it reaches the last lot before the cancel.
        rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(swap=False), lambda _: None)
        assert gateway.cancel(script.job_id).status_code == 200
        [cancel_event] = gateway_events(own_engine, script.job_id, "JobCancelled")
        publisher.publish(topics.submissions, cancel_event)
        publisher.flush()
        with own_engine.begin() as store:  # the live store's batch, as `handle` commits it
            lock_read_models(store)
            lock_jobs(store, [script.job_id])
            apply_batch(store, [last, cancel_event], live=True)
        assert (job_row(own_engine, script.job_id)["status"], job_row(own_engine, script.job_id)[
            "completion_published"]) == ("cancelled", False)

        assert rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(), lambda _: None).swapped
        producer = EventProducer(own_settings.kafka, "result-store-test")
        # The live store's announcement of its batch, once the swap let it go; then the swap watch.
        announce(own_engine, producer, topics.completions, [script.job_id])
        announce(own_engine, producer, topics.completions)
        status = gateway.get_job("/api/v1/batch-status/{job_id}", script.job_id).json()

    assert announced_statuses(infra, topics, script.job_id) == ["cancelled"]
    assert job_row(own_engine, script.job_id)["status"] == "cancelled"
    assert status["status"] == "cancelled", status
