"""The usage invariant on recorded state: the stand-in's billed lines (as `chaos.spend.paid_batches`
reads them) against `lots.usage` and `jobs.usage`. A billed answer missing from a lot's usage or
from its job's total, or an answer billed twice and counted once, is reported; equal tokens pass.
A cancelled job whose batches still run or are not collected is not compared yet (its late answers
are still to come), and reported as not checked if it stays so."""

from __future__ import annotations

from typing import Any

from chaos.spend import PaidBatch
from chaos.usage_check import KINDS, unsettled, usage_breaches
from lotlens_common.stage.record import batch_metadata

VISION = {"input_tokens": 100, "output_tokens": 40, "reasoning_tokens": 0, "model": "gpt-4o"}
TRANSLATION = {"input_tokens": 60, "output_tokens": 90, "reasoning_tokens": 64, "model": "gpt-5-mini"}


def _line(usage: dict[str, Any], status: int = 200) -> dict[str, Any]:
    tokens = [usage["input_tokens"], usage["output_tokens"], usage["reasoning_tokens"]]
    return {"status": status, "usable": status == 200, "asked": "x",
            "tokens": tokens if status == 200 else [0, 0, 0]}


def _batch(batch_id: str, stage: str, answers: dict[str, Any], job: str = "job-1",
           status: str = "completed") -> PaidBatch:
    batch = {"id": batch_id, "status": status, "created_at": 0, "completed_at": 1,
             "metadata": batch_metadata(stage, job, f"shard-{batch_id}", 1)}
    return PaidBatch(batch, list(answers), answers)


def _job(*lots: dict[str, Any]) -> dict[str, Any]:
    return {kind: sum(lot[kind] for lot in lots) for kind in KINDS}


PAID = [_batch("v", "vision", {"lot-1": _line(VISION), "lot-2": _line(VISION)}),
        _batch("t", "translation", {"lot-1": _line(TRANSLATION), "lot-2": _line(TRANSLATION)})]


def test_usage_equal_to_what_was_billed_passes() -> None:
    lot_usage = {("job-1", lot): {"vision": VISION, "translation": TRANSLATION} for lot in ("lot-1", "lot-2")}
    assert usage_breaches(PAID, lot_usage, {"job-1": _job(VISION, VISION, TRANSLATION, TRANSLATION)}) == []


def test_an_error_line_is_not_billed() -> None:
    paid = [*PAID, _batch("v0", "vision", {"lot-1": _line(VISION, status=500)})]
    lot_usage = {("job-1", lot): {"vision": VISION, "translation": TRANSLATION} for lot in ("lot-1", "lot-2")}
    assert usage_breaches(paid, lot_usage, {"job-1": _job(VISION, VISION, TRANSLATION, TRANSLATION)}) == []


def test_a_billed_answer_missing_from_a_lot_and_its_job_is_reported() -> None:
    lot_usage = {("job-1", "lot-1"): {"vision": VISION, "translation": TRANSLATION},
                 ("job-1", "lot-2"): {"vision": VISION}}
    assert usage_breaches(PAID, lot_usage, {"job-1": _job(VISION, VISION, TRANSLATION)}) == [
        "job job-1: usage (260, 170, 64), the stand-in billed (320, 260, 128) for its answers "
        "(input, output, reasoning tokens)",
        "lot lot-2 of job job-1: translation usage (0, 0, 0), the stand-in billed (60, 90, 64) "
        "(input, output, reasoning tokens)"]


def test_an_answer_billed_twice_and_counted_once_is_reported() -> None:
    paid = [*PAID, _batch("v2", "vision", {"lot-1": _line(VISION)})]
    lot_usage = {("job-1", lot): {"vision": VISION, "translation": TRANSLATION} for lot in ("lot-1", "lot-2")}
    found = usage_breaches(paid, lot_usage, {"job-1": _job(VISION, VISION, TRANSLATION, TRANSLATION)})
    assert found == [
        "job job-1: usage (320, 260, 128), the stand-in billed (420, 300, 128) for its answers "
        "(input, output, reasoning tokens)",
        "lot lot-1 of job job-1: vision usage (100, 40, 0), the stand-in billed (200, 80, 0) "
        "(input, output, reasoning tokens)"]


def test_a_job_total_short_of_its_lots_is_reported() -> None:
    # The lots hold every answer, but the total shown to the user was summed before the last one.
    lot_usage = {("job-1", lot): {"vision": VISION, "translation": TRANSLATION} for lot in ("lot-1", "lot-2")}
    found = usage_breaches(PAID, lot_usage, {"job-1": _job(VISION, VISION, TRANSLATION)})
    assert found == ["job job-1: usage (260, 170, 64), the stand-in billed (320, 260, 128) for its answers "
                     "(input, output, reasoning tokens)"]


def test_jobs_not_finished_are_left_out() -> None:
    assert usage_breaches(PAID, {}, {}) == []


def test_a_finished_job_never_announced_is_reported_not_skipped() -> None:
    assert usage_breaches(PAID, {}, {}, finished=["job-1"]) == [
        "job job-1 is finished but its usage was never summed (no JobCompleted)"]


# A cancelled job: its batch was cancelled after running two lines, both billed; LotLens has
# collected the first answer only when the usage is read (the rest comes late, after JobCompleted).
CANCELLED = [_batch("v9", "vision", {"lot-1": _line(VISION), "lot-2": _line(VISION)}, job="job-9",
                    status="cancelled")]
SO_FAR = ({("job-9", "lot-1"): {"vision": VISION}, ("job-9", "lot-2"): None}, {"job-9": _job(VISION)})


def test_a_cancelled_job_with_a_batch_not_collected_yet_is_not_compared_half_way() -> None:
    moving = unsettled(CANCELLED, uncollected={"v9"}, cancelled=["job-9"])
    assert moving == {"job-9": "its vision batch v9 ended cancelled but the stage has not collected it"}
    # Reported as not checked if it stays so until the deadline, not as a breach.
    assert usage_breaches(CANCELLED, *SO_FAR, finished=["job-9"], unchecked=moving) == [
        "usage of cancelled job job-9 not checked: its vision batch v9 ended cancelled but the stage "
        "has not collected it"]


def test_a_cancelled_job_with_a_batch_still_running_is_not_settled() -> None:
    running = [_batch("v9", "vision", {"lot-1": _line(VISION)}, job="job-9", status="cancelling")]
    assert unsettled(running, uncollected=set(), cancelled=["job-9"]) == {
        "job-9": "its vision batch v9 is still cancelling at the stand-in"}
    assert unsettled(running, uncollected=set(), cancelled=[]) == {}


def test_a_cancelled_job_whose_batches_were_collected_is_compared() -> None:
    # Collected, and still an answer short: the answer was dropped, a real breach.
    assert unsettled(CANCELLED, uncollected=set(), cancelled=["job-9"]) == {}
    assert usage_breaches(CANCELLED, *SO_FAR, finished=["job-9"]) == [
        "job job-9: usage (100, 40, 0), the stand-in billed (200, 80, 0) for its answers "
        "(input, output, reasoning tokens)",
        "lot lot-2 of job job-9: vision usage (0, 0, 0), the stand-in billed (100, 40, 0) "
        "(input, output, reasoning tokens)"]
