"""The work store counts a job's arrived lots as they are inserted (the batching rule's
"has every lot arrived?"), once per lot whatever the re-deliveries; arrivals are COPYed, and a
batch with a known lot falls back to the insert that skips it without undoing the rest of the
consumer's transaction."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotFailed, TranslationCompleted, VisionCompleted
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.work import LotWork, TranslationWork
from lotlens_translator.handlers import handle
from tests.conftest import new_id
from tests.integration.lock_waits import wait_for_a_lock_wait
from tests.integration.stage.helpers import enqueue


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
    with engine.connect() as conn:  # the cancelled job's lots arrive cancelled: none ever sent
        assert store.lot_statuses(conn, "translation", other) == {
            "lot-0": store.CANCELLED, "lot-1": store.CANCELLED}
        assert [job for job in store.waiting_jobs(conn, "translation") if job.job_id == other] == []


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


class _Producer:
    def publish(self, *_args: object) -> None:
        raise AssertionError("nothing passes through: the lot asks for German")

    def flush(self) -> None:
        return None


def test_a_lot_arriving_while_its_job_is_being_cancelled_is_never_sent(engine: Engine) -> None:
    """The cancellation and the lot come from two topics, often to two instances: the arrival read
    "not cancelled" before the cancel committed, then queued the lot after it, and the lot was
    claimed and paid for (claims do not look at the flag)."""
    job_id = new_id("job-")
    envelope = Envelope(VisionCompleted(job_id=job_id, lot_id="lot-0", english_html="<p>x</p>",
                                        languages=("en", "de"), total_lots=1, processed_images=1,
                                        missing_images=()), client_id="c1")
    with engine.connect() as cancelling:
        cancelling.begin()
        store.cancel_job(cancelling, "translation", job_id)  # the job's row is locked to the commit
        arriving = threading.Thread(target=handle, args=(engine, _Producer(), [envelope]),
                                    kwargs={"topic": "unused"})
        arriving.start()
        wait_for_a_lock_wait(engine, "the arrival")  # it has read the flag and waits for the job's row
        cancelling.commit()
    arriving.join(30)
    assert not arriving.is_alive()
    with engine.connect() as conn:
        assert store.lot_statuses(conn, "translation", job_id) == {"lot-0": store.CANCELLED}
        assert [job for job in store.waiting_jobs(conn, "translation") if job.job_id == job_id] == []


class _Recording:
    def __init__(self) -> None:
        self.published: list[object] = []

    def publish(self, _topic: str, envelope: Envelope) -> None:
        self.published.append(envelope.event)

    def flush(self) -> None:
        return None


def test_an_english_only_lot_failed_at_vision_gets_no_translation_from_a_late_answer(engine: Engine) -> None:
    """A lot failed at the vision stage, then described by a retried batch's late answer: the
    read models keep the failure (first on the vision topic), but an English-only job's lot
    passed straight through and got a TranslationCompleted too, which subscribers of the
    translation topic could read before the LotFailed of the vision topic."""
    job_id = new_id("job-")
    failed = Envelope(LotFailed(job_id=job_id, lot_id="lot-0", stage="vision", reason="gave up",
                                total_lots=2), client_id="c1")
    described = [Envelope(VisionCompleted(job_id=job_id, lot_id=f"lot-{i}", english_html="<p>x</p>",
                                          languages=("en",), total_lots=2, processed_images=1,
                                          missing_images=()), client_id="c1") for i in (0, 1)]
    producer = _Recording()
    handle(engine, producer, [failed], topic="unused")  # type: ignore[arg-type]
    handle(engine, producer, described, topic="unused")  # type: ignore[arg-type]
    handle(engine, producer, described, topic="unused")  # type: ignore[arg-type]  # re-delivered
    passed = [event.lot_id for event in producer.published if isinstance(event, TranslationCompleted)]
    # Once (a re-delivered batch finds it recorded, published before its commit), never for the
    # failed lot.
    assert passed == ["lot-1"]
    with engine.connect() as conn:
        assert store.lot_statuses(conn, "translation", job_id) == {"lot-0": store.SKIPPED,
                                                                   "lot-1": store.SKIPPED}


def test_a_late_answer_in_the_batch_of_its_lots_failure_passes_nothing_through(engine: Engine) -> None:
    """The failure and the late answer consumed together (a translator catching up reads both in one
    batch): the lot was new to the stage, so the answer after its failure passed through."""
    job_id = new_id("job-")
    failed = Envelope(LotFailed(job_id=job_id, lot_id="lot-0", stage="vision", reason="gave up",
                                total_lots=1), client_id="c1")
    late = Envelope(VisionCompleted(job_id=job_id, lot_id="lot-0", english_html="<p>x</p>",
                                    languages=("en",), total_lots=1, processed_images=1,
                                    missing_images=()), client_id="c1")
    producer = _Recording()
    handle(engine, producer, [failed, late, late], topic="unused")  # type: ignore[arg-type]
    assert [event for event in producer.published if isinstance(event, TranslationCompleted)] == []
    with engine.connect() as conn:
        assert store.lot_statuses(conn, "translation", job_id) == {"lot-0": store.SKIPPED}


class _SlowFlush(_Recording):
    def __init__(self) -> None:
        super().__init__()
        self.flushing = threading.Event()

    def flush(self) -> None:
        self.flushing.set()  # its lot written, not committed
        time.sleep(1.0)  # the other replica meets this one's uncommitted lot meanwhile


def test_two_replicas_given_the_same_batch_pass_an_english_only_lot_through_once(engine: Engine) -> None:
    """A rebalance hands a partition on while its old owner still works on a batch: both apply it.
    The second waits on the first's uncommitted lot, then finds it known and publishes nothing."""
    job_id = new_id("job-")
    described = [Envelope(VisionCompleted(job_id=job_id, lot_id="lot-0", english_html="<p>x</p>",
                                          languages=("en",), total_lots=1, processed_images=1,
                                          missing_images=()), client_id="c1")]
    first, second = _SlowFlush(), _Recording()
    old_owner = threading.Thread(target=handle, args=(engine, first, described), kwargs={"topic": "unused"})
    old_owner.start()
    assert first.flushing.wait(30)
    handle(engine, second, described, topic="unused")  # type: ignore[arg-type]
    old_owner.join(30)
    assert [type(event) for event in first.published + second.published] == [TranslationCompleted]
