"""The chaos invariant on event ids: an event published again (after a kill -9 between a publish
and its record) must keep its id; two different events may not be told apart by anything else."""

from __future__ import annotations

from datetime import UTC, datetime

from chaos.invariants import contradicting_outcomes, ids_changed
from lotlens_common.envelope import Envelope, caused
from lotlens_common.events import JobCompleted, LotFailed, VisionCompleted, WebhookRedeliveryRequested


def _described(lot_id: str) -> VisionCompleted:
    return VisionCompleted(job_id="job-1", lot_id=lot_id, english_html="<p>Dent.</p>", languages=("en",),
                           total_lots=2, processed_images=1, missing_images=())


def test_a_copy_under_its_first_id_passes_and_under_a_new_id_is_a_violation() -> None:
    first = caused(_described("lot-1"), "client", "collect shard-a lot-1")
    copy = caused(_described("lot-1"), "client", "collect shard-a lot-1")
    assert ids_changed([first, copy, caused(_described("lot-2"), "client", "collect shard-a lot-2")]) == []

    fresh = Envelope(event=_described("lot-1"), client_id="client")  # a random id, as before the fix
    assert ids_changed([first, fresh]) == ["VisionCompleted job-1 lot-1 published under 2 event ids"]


def test_a_job_announced_twice_under_two_ids_is_a_violation_and_two_redeliveries_are_not() -> None:
    done = JobCompleted.model_validate({"job_id": "job-1", "status": "completed", "total_lots": 2,
                                        "processed_lots": 2, "failed_lots": 0,
                                        "completed_at": datetime.now(UTC)})
    assert ids_changed([Envelope(event=done, client_id="c"), Envelope(event=done, client_id="c")]) == [
        "JobCompleted job-1 published under 2 event ids"]

    asked = [Envelope(event=WebhookRedeliveryRequested(job_id="job-1", redelivery_id=f"r{n}",
                                                       requested_at=datetime.now(UTC)), client_id="c")
             for n in (1, 2)]
    assert ids_changed(asked) == []


def test_a_lot_both_failed_and_described_by_one_stage_is_a_violation() -> None:
    """A crash between a LotFailed and its record had recovery send the lot and describe it after
    its public failure: two outcomes, each under its own id, which the id check cannot see."""
    failed = caused(LotFailed(job_id="job-1", lot_id="lot-1", stage="vision", reason="no image"),
                    "client", "prepare shard-a lot-1")
    described = caused(_described("lot-1"), "client", "collect shard-b lot-1")
    other = caused(_described("lot-2"), "client", "collect shard-b lot-2")
    later = caused(LotFailed(job_id="job-1", lot_id="lot-2", stage="translation", reason="refused"),
                   "client", "collect shard-c lot-2")
    assert contradicting_outcomes([failed, described, other, later]) == [
        "job-1 lot-1 has 2 outcomes at the vision stage: LotFailed, VisionCompleted"]
