"""A cancelled job's queue in PostgreSQL: the intake's cancel drops the lots with nothing billed,
and leaves those billed for earlier answers (a part of their languages) to the runner, whose
LotFailed reports them (`stage.cancel`); a lot sent back after the cancel waits for it too."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, text

from lotlens_common.events import LotFailed
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.model.usage import Usage
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage import cancel
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.ports import Settlement
from lotlens_common.stage.service import postgres_stage
from lotlens_common.stage.submit import flush_due
from lotlens_common.stage.work import LotWork, TranslationWork
from lotlens_common.tables import stage_lots
from lotlens_translator.translation_stage import TranslationStage
from tests.conftest import new_id, rows_read
from tests.events import read_to_end
from tests.integration.stage.helpers import STAGE as SETTINGS
from tests.integration.stage.helpers import enqueue
from tests.polling import wait_for

STAGE = "translation"
PAID = Usage(input_tokens=4000, output_tokens=12_000, model="gpt-4.1-mini")


def _lot(job_id: str, lot_id: str, paid: Usage | None = None) -> LotWork[TranslationWork]:
    translated = {"de": "<p>x</p>"} if paid else {}
    return LotWork(job_id, lot_id, "c1", 3, 0, TranslationWork(
        english_html="<p>x</p>", languages=("en", "de", "fr"), translated=translated, earlier_usage=paid))


def _all(lots: list[LotWork[Any]]) -> tuple[int, int]:
    return len(lots), 0


def _statuses(engine: Engine, job_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        return store.lot_statuses(conn, STAGE, job_id)


def _cancel(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:
        store.cancel_job(conn, STAGE, job_id)


def test_a_cancel_leaves_a_lot_billed_for_a_part_waiting_for_the_runner_however_often_it_comes(
        engine: Engine) -> None:
    job_id = new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, STAGE, [_lot(job_id, "between-parts", PAID), _lot(job_id, "unsent-0"),
                              _lot(job_id, "unsent-1")])
    _cancel(engine, job_id)
    _cancel(engine, job_id)  # the JobCancelled delivered again
    assert _statuses(engine, job_id) == {
        "between-parts": store.WAITING, "unsent-0": store.CANCELLED, "unsent-1": store.CANCELLED}
    work = PostgresWorkStore(engine, STAGE, TranslationWork)
    [job] = [job for job in work.waiting_jobs() if job.job_id == job_id]
    assert (job.cancelled, job.waiting) == (True, 1)


def test_a_part_settled_after_the_cancel_goes_back_with_its_billed_work_for_the_runner(
        engine: Engine) -> None:
    # The collection read "not cancelled" before the cancel committed: the lot's part, done and
    # billed, sends it back to the queue. Cancelled there, the work saving the part's usage was
    # written to a dropped lot, and no event ever carried it.
    job_id = new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, STAGE, [_lot(job_id, "parted"), _lot(job_id, "failed-batch")])
    work = PostgresWorkStore(engine, STAGE, TranslationWork)
    [parted, _] = work.claim(job_id, new_id("translation-"), 2, _all)
    _cancel(engine, job_id)  # a claimed lot is in its shard: left to the shard's collection
    settlement = Settlement.empty()
    settlement.unsent["de translated; the rest go in another request"] = ["parted"]
    settlement.rework.append(_lot(job_id, "parted", PAID))
    settlement.again["the batch expired"] = ["failed-batch"]
    work.settle(job_id, settlement)

    assert _statuses(engine, job_id) == {"parted": store.WAITING, "failed-batch": store.WAITING}
    [job] = [job for job in work.waiting_jobs() if job.job_id == job_id]
    assert (job.cancelled, job.waiting) == (True, 2)
    with engine.connect() as conn:
        saved = conn.execute(select(stage_lots.c.work).where(
            stage_lots.c.job_id == job_id, stage_lots.c.lot_id == parted.lot_id)).scalar_one()
    assert Usage.model_validate(saved["earlier_usage"]) == PAID


def _read_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold each claim, once it has read its queue, until the other claim has read it too or waits
    for this one's lock on it: the two instances' claims overlap, whatever the threads' timing."""
    reads, together = [0], threading.Condition()
    real = store.next_in_queue

    def read_then_wait(conn: Connection, *args: Any) -> Any:
        queued = real(conn, *args)

        def other_claim_came() -> bool:
            # pg_locks, not pg_stat_activity: that one is read once per transaction.
            return reads[0] >= 2 or bool(conn.execute(text(
                "SELECT EXISTS (SELECT FROM pg_locks"  # a claim waiting for this one's lock
                " WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid)))")).scalar_one())

        with together:
            reads[0] += 1
            together.notify_all()
            wait_for(other_claim_came, "the other instance's claim", sleep=together.wait)
        return queued

    monkeypatch.setattr(store, "next_in_queue", read_then_wait)


def test_two_instances_report_a_cancelled_lot_billed_for_a_part_once(
        settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, STAGE, [_lot(job_id, "between-parts", PAID), _lot(job_id, "unsent")])
    _cancel(engine, job_id)
    spec = TranslationStage(settings.topics.translation, settings.models, billed_share=0.5)
    _read_together(monkeypatch)
    failures: list[BaseException] = []
    # What `drop_cancelled` logs and goes on from (a claim or a publish failing) fails the test too.
    monkeypatch.setattr(cancel.log, "exception",
                        lambda *args, **kwargs: failures.append(sys.exc_info()[1] or RuntimeError(args)))

    def one_round() -> None:
        async def flush() -> None:
            client = make_openai_client("test", "http://127.0.0.1:9/v1", 10)  # no batch is made
            async with client:
                await flush_due(postgres_stage(engine, EventProducer(settings.kafka, "test"),
                                               OpenAIBatches(client), spec, SETTINGS))
        try:
            asyncio.run(flush())
        except BaseException as exc:  # a thread's error is the test's, not a line on stderr
            failures.append(exc)

    instances = [threading.Thread(target=one_round) for _ in range(2)]
    for instance in instances:
        instance.start()
    for instance in instances:
        instance.join(60)
    assert not any(instance.is_alive() for instance in instances) and failures == []
    assert _statuses(engine, job_id) == {"between-parts": store.CANCELLED, "unsent": store.CANCELLED}
    reported = [e.event for e in read_to_end(settings.kafka.bootstrap_servers, settings.topics.translation)
                if e.job_id == job_id]
    assert [type(event) for event in reported] == [LotFailed]
    assert isinstance(failed := reported[0], LotFailed) and (failed.lot_id, failed.usage) == (
        "between-parts", PAID)


def test_a_paused_stage_reads_only_the_cancelled_jobs_queues(engine: Engine) -> None:
    # Paused (the key or the quota refused), the stage still drops cancelled jobs' lots at every
    # tick: counting the queues it cannot send too read every waiting lot five times a second.
    stage = new_id("paused-")  # a stage of its own: other tests' queues are not in the way
    sending, cancelled = new_id("job-"), new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, stage, [_lot(sending, f"lot-{i}") for i in range(2000)])
        enqueue(conn, stage, [_lot(cancelled, "between-parts", PAID)])
        store.cancel_job(conn, stage, cancelled)
    with engine.begin() as conn:
        before = rows_read(conn, "stage_lots")
        jobs = store.waiting_jobs(conn, stage, cancelled_only=True)
        read = rows_read(conn, "stage_lots") - before
    assert read <= 1  # the cancelled job's lot
    assert [(job.job_id, job.waiting) for job in jobs] == [(cancelled, 1)]
