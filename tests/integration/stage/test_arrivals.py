"""The work store counts a job's arrived lots as they are inserted (the batching rule's
"has every lot arrived?"), once per lot whatever the re-deliveries."""

from __future__ import annotations

from sqlalchemy import Engine

from lotlens_common.stage.adapters import postgres as store
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
        store.enqueue(conn, "translation", _lots(job_id, 0, 3, total=5))
    assert _waiting(engine, job_id) == (3, 3, 5)
    with engine.begin() as conn:
        # A consumer batch re-delivered with one new lot, and a lot skipped (failed upstream).
        store.enqueue(conn, "translation", _lots(job_id, 0, 4, total=5))
        store.enqueue(conn, "translation", _lots(job_id, 4, 1, total=5), status=store.SKIPPED)
        store.enqueue(conn, "translation", _lots(job_id, 4, 1, total=5), status=store.SKIPPED)
    assert _waiting(engine, job_id) == (4, 5, 5)


def test_a_cancelled_job_keeps_its_count_and_claims_do_not_change_it(engine: Engine) -> None:
    job_id, other = new_id("job-"), new_id("job-")
    with engine.begin() as conn:
        store.cancel_job(conn, "translation", other)
        store.enqueue(conn, "translation", _lots(job_id, 0, 4, total=4) + _lots(other, 0, 2, total=2))
        queued = store.next_in_queue(conn, "translation", job_id, 3, TranslationWork)
        store.create_shard(conn, "translation", "shard-" + job_id, [lot for _, lot in queued], 0,
                           (queued[0][0], queued[-1][0]))
    assert _waiting(engine, job_id) == (1, 4, 4)
    assert _waiting(engine, other) == (2, 2, 2)
