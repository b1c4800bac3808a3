"""The work store counts a job's arrived lots as they are inserted (the batching rule's
"has every lot arrived?"), once per lot whatever the re-deliveries; arrivals are COPYed, and a
batch with a known lot falls back to the insert that skips it without undoing the rest of the
consumer's transaction."""

from __future__ import annotations

from sqlalchemy import Engine

from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.postgres_arrivals import enqueue
from lotlens_common.stage.work import LotWork, TranslationWork
from tests.conftest import new_id


def _lots(job_id: str, first: int, count: int, total: int) -> list[LotWork[TranslationWork]]:
    return [LotWork(job_id, f"lot-{i}", "c1", total, 0, TranslationWork(english_html="<p>x</p>",
                                                                        languages=("en", "de")))
            for i in range(first, first + count)]


def _waiting(engine: Engine, job_id: str) -> tuple[int, int, int]:
    with engine.begin() as conn:
        (job,) = [job for job in store.waiting_jobs(conn, "translation") if job.job_id == job_id]
    return job.waiting, job.arrived, job.expected


def test_arrivals_are_counted_once_whatever_the_redeliveries(engine: Engine) -> None:
    job_id = new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, "translation", _lots(job_id, 0, 3, total=5))
    assert _waiting(engine, job_id) == (3, 3, 5)
    with engine.begin() as conn:
        # A consumer batch re-delivered with one new lot, and a lot skipped (failed upstream).
        enqueue(conn, "translation", _lots(job_id, 0, 4, total=5))
        enqueue(conn, "translation", _lots(job_id, 4, 1, total=5), status=store.SKIPPED)
        enqueue(conn, "translation", _lots(job_id, 4, 1, total=5), status=store.SKIPPED)
    assert _waiting(engine, job_id) == (4, 5, 5)


def test_a_cancelled_job_keeps_its_count_and_claims_do_not_change_it(engine: Engine) -> None:
    job_id, other = new_id("job-"), new_id("job-")
    with engine.begin() as conn:
        store.cancel_job(conn, "translation", other)
        enqueue(conn, "translation", _lots(job_id, 0, 4, total=4) + _lots(other, 0, 2, total=2))
        queued = store.next_in_queue(conn, "translation", job_id, 3, TranslationWork)
        store.create_shard(conn, "translation", "shard-" + job_id, [lot for _, lot in queued], 0,
                           (queued[0][0], queued[-1][0]))
    assert _waiting(engine, job_id) == (1, 4, 4)
    assert _waiting(engine, other) == (2, 2, 2)


def test_copied_work_reads_back_exactly_with_copy_s_special_characters(engine: Engine) -> None:
    job_id = new_id("job-")
    awkward = 'tab\there, newline\nthere, CR\r, backslash \\N and \\t, quote " and \u00e9\u6f22\U0001f697'
    work = TranslationWork(english_html=awkward, languages=("en", "de"), missing_images=("http://img.test/a\\b.jpg",),
                           trace={"traceparent": "00-ab-cd-01"})
    with engine.begin() as conn:
        enqueue(conn, "translation", [LotWork(job_id, "lot\\0", "client\t1", 1, 0, work)])
    with engine.begin() as conn:
        ((_place, lot),) = store.next_in_queue(conn, "translation", job_id, 10, TranslationWork)
    assert (lot.lot_id, lot.client_id, lot.work) == ("lot\\0", "client\t1", work)
    assert _waiting(engine, job_id)[1] == 1


def test_a_redelivered_batch_keeps_the_transaction_s_earlier_writes(engine: Engine) -> None:
    job_id, other = new_id("job-"), new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, "translation", _lots(job_id, 0, 2, total=3))
    with engine.begin() as conn:
        # The consumer's transaction writes something, then meets a known lot: only the COPY is undone.
        store.cancel_job(conn, "translation", other)
        enqueue(conn, "translation", _lots(job_id, 1, 2, total=3))
    assert _waiting(engine, job_id) == (3, 3, 3)
    with engine.begin() as conn:
        assert store.cancelled_jobs(conn, "translation", [other]) == {other}
