"""The stage's pure decisions: every transition of the shard life cycle and every lot outcome."""

from __future__ import annotations

from typing import Any

import pytest

from lotlens_common.stage.core import lifecycle as lc
from lotlens_common.stage.core.outcomes import NOT_SENT, Kind, Outcome, after_error, line_kind

NOW = 2_000_000_000.0
DAY = 24 * 3600.0


def batch(status: str, age_s: float = 60.0, **extra: Any) -> dict[str, Any]:
    return {"id": "b1", "status": status, "created_at": NOW - age_s, **extra}


@pytest.mark.parametrize("status", sorted(lc.RUNNING - {"cancelling"}))
def test_submitted_running_batch_is_waited_on(status: str) -> None:
    assert lc.for_submitted(batch(status), False, NOW, DAY) == lc.Wait(status)


def test_submitted_cancelling_batch_is_waited_on_even_when_old_or_its_job_cancelled() -> None:
    assert lc.for_submitted(batch("cancelling", age_s=DAY + 60), True, NOW, DAY) == lc.Wait("cancelling")


@pytest.mark.parametrize("status", sorted(lc.RUNNING | {"paused"}))
def test_a_running_batch_past_its_age_and_the_cancelling_limit_is_lost_whatever_its_status(
        status: str) -> None:
    # Cancelled at every poll past its age, a batch OpenAI cannot cancel (one stuck `finalizing`
    # answers 409) was cancelled again for good: its lots never went again, its job never finished.
    deadline = DAY + lc.CANCELLING_LIMIT_S
    assert isinstance(lc.for_submitted(batch(status, age_s=deadline + 1), False, NOW, DAY), lc.Lost)
    assert not isinstance(lc.for_submitted(batch(status, age_s=deadline - 1), False, NOW, DAY), lc.Lost)


@pytest.mark.parametrize("status", sorted(lc.FINISHED))
def test_submitted_finished_batch_is_collected(status: str) -> None:
    assert lc.for_submitted(batch(status), False, NOW, DAY) == lc.Collect(batch(status))


def test_a_status_the_api_description_does_not_list_is_waited_on_like_a_running_one() -> None:
    # Collected as if finished, a batch in a status OpenAI might add one day (say "paused") had
    # every lot without an answer yet sent again: paid twice while the first batch still ran.
    assert lc.for_submitted(batch("paused"), False, NOW, DAY) == lc.Wait("paused")
    assert isinstance(lc.for_submitted(batch("paused", age_s=DAY + 1), False, NOW, DAY), lc.Cancel)
    assert isinstance(lc.for_submitted(batch("paused"), True, NOW, DAY), lc.Cancel)
    # A duplicate in such a status may still spend: it is cancelled, not ignored.
    assert lc.for_duplicate(batch("paused")) == lc.CancelDuplicate()


def test_submitted_running_batch_of_a_cancelled_job_is_cancelled() -> None:
    assert isinstance(lc.for_submitted(batch("in_progress"), True, NOW, DAY), lc.Cancel)


def test_submitted_running_batch_older_than_the_max_age_is_cancelled() -> None:
    assert isinstance(lc.for_submitted(batch("in_progress", age_s=DAY + 1), False, NOW, DAY), lc.Cancel)
    assert lc.for_submitted(batch("in_progress", age_s=DAY - 1), False, NOW, DAY) == lc.Wait("in_progress")


@pytest.mark.parametrize("status_code", [401, 403, 404])
def test_submitted_batch_unreadable_by_id_is_looked_up_by_metadata(status_code: int) -> None:
    assert isinstance(lc.for_read_error(status_code, "no"), lc.LookUp)


@pytest.mark.parametrize("status_code", [None, 408, 429, 500, 502, 503])
def test_submitted_batch_read_failing_transiently_is_tried_later(status_code: int | None) -> None:
    assert isinstance(lc.for_read_error(status_code, "busy"), lc.TryLater)


def test_lookup_finding_the_batch_goes_on_as_if_read_by_id() -> None:
    found = lc.for_listing([batch("completed")], "b1", set(), NOW, False, NOW, DAY)
    assert found == lc.Collect(batch("completed"))
    assert lc.for_listing([batch("in_progress")], "b1", set(), NOW, False, NOW, DAY) == lc.Wait("in_progress")


def test_lookup_not_finding_it_among_our_batches_created_before_it_declares_it_lost() -> None:
    earlier = {"id": "b2", "status": "completed", "created_at": NOW - 60}
    assert isinstance(lc.for_listing([earlier], "b1", {"b2"}, NOW, False, NOW, DAY), lc.Lost)


def test_lookup_seeing_only_batches_of_ours_created_since_keeps_waiting_for_its_fate() -> None:
    # A key of another project creates its batches there: one made since proves nothing about
    # the project the unreadable batch runs in (taken for proof, its lots were paid twice).
    since = [{"id": "b2", "status": "validating", "created_at": NOW + 30},
             {"id": "b3", "status": "completed", "created_at": NOW}]  # the claim's own second
    assert isinstance(lc.for_listing(since, "b1", {"b2", "b3"}, NOW + 0.9, False, NOW, DAY), lc.LookUp)


def test_lookup_seeing_none_of_our_batches_keeps_waiting_for_its_fate() -> None:
    earlier_not_ours = {"id": "b2", "status": "completed", "created_at": NOW - 60}
    assert isinstance(lc.for_listing([], "b1", set(), NOW, False, NOW, DAY), lc.LookUp)
    assert isinstance(lc.for_listing([earlier_not_ours], "b1", set(), NOW, False, NOW, DAY), lc.LookUp)


def test_building_shard_with_a_batch_found_by_metadata_adopts_it() -> None:
    assert lc.for_building(3, {"id": "b9"}, 1.0) == lc.Adopt({"id": "b9"})


def test_building_shard_without_a_batch_is_built_and_without_lots_is_closed() -> None:
    assert lc.for_building(3, None, None) == lc.Build()
    assert lc.for_building(0, None, None) == lc.CloseEmpty()


def test_building_shard_whose_create_may_still_land_waits_until_a_listing_would_show_it() -> None:
    assert lc.for_building(3, None, 1.0) == lc.AwaitCreate()
    assert lc.for_building(3, None, lc.CREATE_LANDS_S) == lc.Build()


def test_unknown_batch_of_a_job_never_seen_is_ignored() -> None:
    assert isinstance(lc.for_unknown_batch(batch("in_progress"), None, job_known=False), lc.Ignore)


def test_unknown_batch_of_a_building_shard_is_left_to_recovery() -> None:
    assert isinstance(lc.for_unknown_batch(batch("in_progress"), "building", True), lc.Ignore)


def test_unknown_batch_without_a_shard_row_is_adopted() -> None:
    assert lc.for_unknown_batch(batch("in_progress"), None, True) == lc.Adopt(batch("in_progress"))


@pytest.mark.parametrize("status", ["submitted", "collected"])
def test_unknown_running_batch_of_a_recorded_shard_is_a_duplicate_and_cancelled(status: str) -> None:
    assert lc.for_unknown_batch(batch("in_progress"), status, True) == lc.CancelDuplicate()


@pytest.mark.parametrize("status", ["cancelling", "completed", "failed"])
def test_unknown_stopped_duplicate_is_ignored(status: str) -> None:
    assert isinstance(lc.for_unknown_batch(batch(status), "submitted", True), lc.Ignore)


@pytest.mark.parametrize(("status", "code", "kind"), [
    (400, "invalid_request_error", Kind.PERMANENT),
    (400, "content_policy_violation", Kind.PERMANENT),
    (400, "invalid_image_url", Kind.PERMANENT),
    (404, "model_not_found", Kind.PERMANENT),
    (408, None, Kind.TRANSIENT),
    (429, "rate_limit_exceeded", Kind.TRANSIENT),
    (500, "server_error", Kind.TRANSIENT),
    (503, None, Kind.TRANSIENT),
    (None, "batch_expired", Kind.TRANSIENT),
    (None, "batch_cancelled", Kind.TRANSIENT),
    (None, None, Kind.TRANSIENT),
])
def test_each_kind_of_line_error(status: int | None, code: str | None, kind: Kind) -> None:
    assert line_kind(status, code) is kind


def test_a_permanent_error_fails_the_lot_at_its_first_attempt() -> None:
    assert after_error(Kind.PERMANENT, "bad", 1, 3, False) == Outcome("failed", "bad")


def test_a_transient_error_sends_the_lot_again_until_the_last_attempt() -> None:
    assert after_error(Kind.TRANSIENT, "busy", 2, 3, False) == Outcome("retry", "busy")
    assert after_error(Kind.TRANSIENT, "busy", 3, 3, False) == Outcome(
        "failed", "busy (gave up after 3 attempts)")


def test_a_direct_line_the_server_never_received_goes_again_without_using_an_attempt() -> None:
    # Refused before it left the machine (the model server down or restarting mid-round), it was a
    # 503 line like any, an attempt: after MAX_ATTEMPTS such rounds its lot failed, never sent.
    assert line_kind(None, NOT_SENT) is Kind.UNSENT
    assert after_error(Kind.UNSENT, "refused", 3, 3, False) == Outcome("retry", "refused", counted=False)
    assert after_error(Kind.UNSENT, "refused", 1, 3, True).verdict == "cancelled"


def test_a_server_answer_with_the_code_not_sent_is_an_answer_like_any() -> None:
    # Any line with the code was unsent, a server's 4xx body in direct mode or any Batch API line
    # included: sent again with no attempt used, for ever. Only a line with no HTTP answer is.
    assert line_kind(400, NOT_SENT) is Kind.PERMANENT
    assert line_kind(503, NOT_SENT) is Kind.TRANSIENT


def test_a_direct_line_the_server_took_and_dropped_uses_its_attempts() -> None:
    # The request that brings the server down reached it: sent again uncounted, it never ended.
    assert after_error(line_kind(503, None), "dropped", 3, 3, False) == Outcome(
        "failed", "dropped (gave up after 3 attempts)")


def test_any_error_of_a_cancelled_job_cancels_the_lot() -> None:
    assert after_error(Kind.TRANSIENT, "x", 1, 3, True).verdict == "cancelled"
    assert after_error(Kind.PERMANENT, "x", 1, 3, True).verdict == "cancelled"
