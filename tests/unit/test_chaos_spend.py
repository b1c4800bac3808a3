"""The spend invariant on recorded batches (as `chaos.spend.paid_batches` reads them from the
stand-in): a lot sent again after a batch answered it with a usable 200 to the same request is paid
twice; a resend after an error line, an answer cut at its cap, a batch that ended before running
the line, or for the next part of the lot's languages is the stage's retry, and a later batch that
never ran the line billed nothing."""

from __future__ import annotations

from typing import Any

from chaos.spend import PaidBatch, batch_breaches
from lotlens_common.stage.record import batch_metadata
from lotlens_openai_standin.batch_run import line_answer

VISION = {"model": "gpt-4o", "input": "Describe"}
RESPONSE = {"status": "completed", "usage": {"input_tokens": 10, "output_tokens": 5}}


def _answer(status: int = 200, body: dict[str, Any] | None = None, request: dict[str, Any] | None = None,
            ) -> dict[str, Any]:
    return line_answer({"custom_id": "lot-1", "body": request or VISION}, status,
                       RESPONSE if body is None else body, faulted=False)


def _batch(batch_id: str, created: int, ended: int, shard: str, answers: dict[str, Any],
           lots: tuple[str, ...] = ("lot-1",)) -> PaidBatch:
    batch = {"id": batch_id, "status": "completed", "created_at": created, "completed_at": ended,
             "metadata": batch_metadata("vision", "job-1", shard, 1)}
    return PaidBatch(batch, list(lots), answers)


def test_a_lot_sent_again_after_a_usable_200_is_a_double_spend() -> None:
    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": _answer()}),
            _batch("batch_b", 20, 30, "shard-b", {"lot-1": _answer()})]
    assert batch_breaches(paid) == [
        "lot lot-1 of job job-1 was sent again at the vision stage in batch batch_b after batch batch_a "
        "answered it with a usable 200 (double spend)"]


def test_a_later_batch_that_never_ran_the_lot_spent_nothing() -> None:
    # A translation lot's next part of its languages, whose batch was cancelled or expired before
    # the line ran: nothing was billed for it, whatever it would have asked.
    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": _answer()}),
            _batch("batch_b", 20, 30, "shard-b", {})]
    paid[1].batch.update(status="cancelled", completed_at=None, cancelled_at=30)
    assert batch_breaches(paid) == []


def test_a_later_answered_line_asking_the_same_is_still_a_double_spend() -> None:
    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": _answer()}),
            _batch("batch_b", 20, 30, "shard-b", {}),
            _batch("batch_c", 40, 50, "shard-c", {"lot-1": _answer()})]
    assert batch_breaches(paid) == [
        "lot lot-1 of job job-1 was sent again at the vision stage in batch batch_c after batch batch_a "
        "answered it with a usable 200 (double spend)"]


def test_a_lot_sent_again_after_an_error_line_passes() -> None:
    failed = _answer(500, {"error": {"message": "boom"}})
    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": failed}),
            _batch("batch_b", 20, 30, "shard-b", {"lot-1": _answer()})]
    assert batch_breaches(paid) == []


def test_a_lot_sent_again_after_an_answer_cut_at_its_cap_passes() -> None:
    cut = _answer(body={"status": "incomplete", "usage": {"input_tokens": 10, "output_tokens": 16}})
    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": cut}),
            _batch("batch_b", 20, 30, "shard-b", {"lot-1": _answer()})]
    assert batch_breaches(paid) == []


def test_a_lot_whose_first_batch_ended_before_running_it_passes() -> None:
    paid = [_batch("batch_a", 0, 10, "shard-a", {}),
            _batch("batch_b", 20, 30, "shard-b", {"lot-1": _answer()})]
    assert batch_breaches(paid) == []


def test_the_next_part_of_a_lots_languages_is_another_request() -> None:
    def part(*languages: str) -> dict[str, Any]:
        schema = {"type": "object", "properties": {language: {"type": "string"} for language in languages}}
        return _answer(request={**VISION, "text": {"format": {"type": "json_schema", "schema": schema}}})

    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": part("de", "fr")}),
            _batch("batch_b", 20, 30, "shard-b", {"lot-1": part("ru")})]
    assert batch_breaches(paid) == []
    paid[1] = _batch("batch_b", 20, 30, "shard-b", {"lot-1": part("de", "fr")})
    assert len(batch_breaches(paid)) == 1
