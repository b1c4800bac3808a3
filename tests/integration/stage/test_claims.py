"""Claims by place: a shard takes a run of its job's queue and writes one row, not one per lot.

What is checked is what the stage relies on: which lots a shard holds, which still wait, how many
times each was sent, that two instances never take the same lot, and that a lot an older release
inserts without a place still joins its job's queue.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Engine, text

from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters import postgres_figures
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.ports import Settlement
from lotlens_common.stage.work import LotWork, TranslationWork
from tests.conftest import new_id, rows_read
from tests.integration.lock_waits import wait_for_a_lock_wait
from tests.integration.plan_support import executed
from tests.integration.stage.helpers import enqueue

STAGE = "translation"


def _enqueue(engine: Engine, job_id: str, count: int) -> None:
    with engine.begin() as conn:
        enqueue(conn, STAGE, [LotWork(job_id, f"lot-{i}", "c1", count, 0, TranslationWork(
            english_html="<p>x</p>", languages=("en", "de"))) for i in range(count)])


def _work_store(engine: Engine) -> PostgresWorkStore[TranslationWork]:
    return PostgresWorkStore(engine, STAGE, TranslationWork)


def _all(lots: list[LotWork[Any]]) -> tuple[int, int]:
    return len(lots), 0


def _row_versions(engine: Engine, job_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT lot_id, xmin::text AS xmin, ctid::text AS ctid FROM stage_lots "
                                 "WHERE stage = :stage AND job_id = :job_id"),
                            {"stage": STAGE, "job_id": job_id})
        return {row.lot_id: f"{row.xmin} {row.ctid}" for row in rows}


def _statuses(engine: Engine, job_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        return store.lot_statuses(conn, STAGE, job_id)


def test_a_claim_takes_the_queue_by_place_without_writing_its_lots(engine: Engine) -> None:
    job_id = new_id("job-")
    _enqueue(engine, job_id, 5)
    before = _row_versions(engine, job_id)
    work = _work_store(engine)

    first = work.claim(job_id, new_id("translation-"), 3, _all)

    assert [(lot.lot_id, lot.attempts) for lot in first] == [("lot-0", 1), ("lot-1", 1), ("lot-2", 1)]
    assert _row_versions(engine, job_id) == before  # not one lot row written
    assert _statuses(engine, job_id) == {"lot-0": store.SUBMITTED, "lot-1": store.SUBMITTED,
                                         "lot-2": store.SUBMITTED, "lot-3": store.WAITING,
                                         "lot-4": store.WAITING}
    assert [(job.client_id, job.waiting, job.arrived) for job in work.waiting_jobs()
            if job.job_id == job_id] == [("c1", 2, 5)]  # the client: the budget is shared by client


def test_a_lot_sent_back_goes_to_the_end_of_the_queue_with_its_send_counted(engine: Engine) -> None:
    job_id = new_id("job-")
    _enqueue(engine, job_id, 4)
    work = _work_store(engine)
    shard = new_id("translation-")
    work.claim(job_id, shard, 2, _all)

    work.requeue(job_id, ["lot-1"], "rate limited")

    assert [lot.lot_id for lot in work.shard_lots(shard)] == ["lot-0"]
    second = work.claim(job_id, new_id("translation-"), 10, _all)
    assert [(lot.lot_id, lot.attempts) for lot in second] == [("lot-2", 1), ("lot-3", 1), ("lot-1", 2)]
    work.close_shard(shard, "collected", "completed")
    assert _statuses(engine, job_id)["lot-0"] == store.DONE
    assert not [job for job in work.waiting_jobs() if job.job_id == job_id]


def test_a_lot_whose_send_openai_never_ran_goes_back_with_its_attempts_as_before(engine: Engine) -> None:
    # Lots left out of a full file, or in a batch refused whole, were not tried: by place (no row
    # written at the claim) and by name (the claim wrote the send) they keep their attempts.
    job_id = new_id("job-")
    _enqueue(engine, job_id, 2)
    work = _work_store(engine)
    work.claim(job_id, new_id("translation-"), 2, _all)
    work.requeue(job_id, ["lot-0", "lot-1"], "enqueued-token limit", sent=False)
    named = work.claim_named(job_id, ["lot-1"], new_id("translation-"), lambda lots: 0)
    assert [(lot.lot_id, lot.attempts) for lot in named] == [("lot-1", 1)]
    work.requeue(job_id, ["lot-1"], "left out of a full file", sent=False)

    again = work.claim(job_id, new_id("translation-"), 10, _all)

    assert [(lot.lot_id, lot.attempts) for lot in again] == [("lot-0", 1), ("lot-1", 1)]


def test_lots_a_claim_does_not_keep_stay_first_in_the_queue(engine: Engine) -> None:
    job_id = new_id("job-")
    _enqueue(engine, job_id, 4)
    work = _work_store(engine)

    kept = work.claim(job_id, new_id("translation-"), 3, lambda lots: (1, 0))
    after = work.claim(job_id, new_id("translation-"), 3, _all)

    assert [lot.lot_id for lot in kept] == ["lot-0"]
    assert [lot.lot_id for lot in after] == ["lot-1", "lot-2", "lot-3"]


def test_two_instances_claiming_one_job_at_once_never_take_the_same_lot(engine: Engine) -> None:
    job_id = new_id("job-")
    _enqueue(engine, job_id, 4)
    taken: list[list[str]] = []
    with engine.begin() as conn:
        queued = store.next_in_queue(conn, STAGE, job_id, 2, TranslationWork)
        other = threading.Thread(target=lambda: taken.append(
            [lot.lot_id for lot in _work_store(engine).claim(job_id, new_id("translation-"), 2, _all)]))
        other.start()
        wait_for_a_lock_wait(engine, "the other claim")  # for this one's lock on the queue
        store.create_shard(conn, STAGE, new_id("translation-"), [lot for _, lot in queued], 0,
                           (queued[0][0], queued[-1][0]))
    other.join(timeout=30)

    assert [lot.lot_id for _, lot in queued] == ["lot-0", "lot-1"]
    assert taken == [["lot-2", "lot-3"]]


def test_a_lot_inserted_without_a_place_by_an_older_release_joins_the_end_of_its_queue(
        engine: Engine) -> None:
    job_id = new_id("job-")
    _enqueue(engine, job_id, 2)
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO stage_lots (stage, job_id, lot_id, client_id, total_lots, work)
            VALUES (:stage, :job_id, 'lot-old', 'c1', 3, CAST(:work AS jsonb))"""),
            {"stage": STAGE, "job_id": job_id,
             "work": TranslationWork(english_html="<p>x</p>", languages=("en",)).model_dump_json()})

    taken = _work_store(engine).claim(job_id, new_id("translation-"), 10, _all)

    assert [lot.lot_id for lot in taken] == ["lot-0", "lot-1", "lot-old"]


def test_an_idle_stage_reads_no_lot_to_find_its_waiting_jobs(engine: Engine) -> None:
    # A stage of its own, so other tests' waiting lots are not in the way.
    stage = new_id("idle-")
    work = PostgresWorkStore(engine, stage, TranslationWork)
    for job_id in (new_id("job-"), new_id("job-")):
        with engine.begin() as conn:
            enqueue(conn, stage, [LotWork(job_id, f"lot-{i}", "c1", 20_000, 0, TranslationWork(
                english_html="<p>x</p>", languages=("en", "de"))) for i in range(20_000)])
        shard_id = new_id("shard-")
        work.claim(job_id, shard_id, 20_000, _all)
        # Its batch is made: the lots wait for OpenAI, not for the stage (a `building` shard's count).
        work.record_batch(shard_id, new_id("batch_"), 20_000, time.time(), 0)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE stage_lots"))

    # The rows an idle stage's tick (five a second) reads.
    with engine.begin() as conn:
        # As the planner chose on the bench's 200,000 rows (a hash join over a scan of the table);
        # here the table is too small for it to choose so by itself.
        conn.execute(text("SET LOCAL enable_nestloop = off"))
        before = rows_read(conn, "stage_lots")
        jobs = store.waiting_jobs(conn, stage)
        waiting = postgres_figures.lots_waiting(conn, stage)
        read = rows_read(conn, "stage_lots") - before

    assert (jobs, waiting) == ([], 0)
    assert read == 0


def test_a_shard_collected_with_its_sent_lots_reads_which_it_holds_not_their_work(engine: Engine) -> None:
    job_id = new_id("job-")
    _enqueue(engine, job_id, 4)
    work = _work_store(engine)
    shard = new_id("translation-")
    claimed = work.claim(job_id, shard, 3, _all)
    sent = {lot.lot_id: lot.with_work(lot.work.model_copy(update={"output_room": 2})) for lot in claimed}
    work.requeue(job_id, ["lot-1"], "rate limited")

    held = work.shard_lots(shard, sent)

    assert sorted(lot.lot_id for lot in held) == ["lot-0", "lot-2"]  # the store says which: lot-1 went back
    assert all(lot is sent[lot.lot_id] for lot in held)  # the work as sent, not read again
    partial = work.shard_lots(shard, {"lot-0": sent["lot-0"]})  # lot-2 unknown: all read from the store
    assert sorted((lot.lot_id, lot.work.output_room) for lot in partial) == [("lot-0", 1), ("lot-2", 1)]


def test_a_shard_estimated_past_two_billion_tokens_is_claimed_and_counted(engine: Engine) -> None:
    """50,000 lots of 17 images are 2.3 billion input tokens by o4-mini's estimate: the column was
    a 32-bit integer, the claim failed "integer out of range" every round, and with it the whole
    stage (no batch sent or collected for any job) until that job was cancelled."""
    job_id = new_id("job-")
    _enqueue(engine, job_id, 2)
    work = _work_store(engine)
    claimed = work.claim(job_id, new_id("translation-"), 2, lambda lots: (len(lots), 2_275_700_000))
    assert len(claimed) == 2
    assert work.tokens_enqueued() >= 2_275_700_000


def test_a_recorded_batch_holds_the_tokens_of_the_lots_it_sent_not_of_the_claim(engine: Engine) -> None:
    # A stage of its own: the count is the whole stage's.
    work = PostgresWorkStore(engine, new_id("tokens-"), TranslationWork)
    job_id, shard_id = new_id("job-"), new_id("shard-")
    with engine.begin() as conn:
        enqueue(conn, work.stage, [LotWork(job_id, f"lot-{i}", "c1", 3, 0, TranslationWork(
            english_html="<p>x</p>", languages=("en",))) for i in range(3)])
    work.claim(job_id, shard_id, 3, lambda lots: (len(lots), 3000))
    assert work.tokens_enqueued() == 3000
    work.requeue(job_id, ["lot-2"], sent=False)  # its images ran out of time: not in the batch

    work.record_batch(shard_id, new_id("batch_"), 2, time.time(), 2000)

    assert work.tokens_enqueued() == 2000


def test_a_lot_sent_back_after_its_job_was_cancelled_waits_to_be_dropped_by_the_runner(
        engine: Engine) -> None:
    # The runner drops it through the settler, never sent again (`stage.cancel`): its work may
    # say it was billed, and a lot dropped here reported nothing.
    job_id = new_id("job-")
    _enqueue(engine, job_id, 2)
    work = _work_store(engine)
    claimed = work.claim(job_id, new_id("translation-"), 2, _all)
    with engine.begin() as conn:
        store.cancel_job(conn, STAGE, job_id)
    work.requeue(job_id, [lot.lot_id for lot in claimed], "rate limited")  # the batch failed meanwhile
    assert _statuses(engine, job_id) == {"lot-0": store.WAITING, "lot-1": store.WAITING}
    [job] = [job for job in work.waiting_jobs() if job.job_id == job_id]
    assert (job.cancelled, job.waiting) == (True, 2)


def test_lots_failed_for_good_with_a_reason_each_are_settled_in_one_statement(engine: Engine) -> None:
    # Reasons carry each lot's detail ("46 of 46 that differ", "none of its 3 images"): one UPDATE
    # per reason was one per lot, 5,000 a chunk when a model release failed a whole job.
    job_id = new_id("job-")
    _enqueue(engine, job_id, 300)
    work = _work_store(engine)
    claimed = work.claim(job_id, new_id("translation-"), 300, _all)
    settlement = Settlement.empty()
    for lot in claimed:
        settlement.failed[f"zh-TW: Simplified characters ({lot.lot_id})"] = [lot.lot_id]

    statements = executed(engine, lambda: work.settle(job_id, settlement))

    updates = [statement for statement, _ in statements if statement.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1, len(updates)
    with engine.connect() as conn:
        states = store.lot_states(conn, STAGE, job_id)
    assert {(state.status, state.last_error) for state in states} == {
        ("failed", f"zh-TW: Simplified characters ({lot.lot_id})") for lot in claimed}
