"""The spend invariant on recorded batches (as `chaos.spend.paid_batches` reads them from the
stand-in): a lot sent again after a batch answered it with a usable 200 to the same request is paid
twice; a resend after an error line, an answer cut at its cap, a batch that ended before running
the line, or for the next part of the lot's languages is the stage's retry, and a later batch that
never ran the line billed nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson

from chaos.spend import PaidBatch, batch_breaches
from lotlens_common.stage.record import batch_metadata
from lotlens_openai_standin.answers import RESPONSES_ENDPOINT
from lotlens_openai_standin.batch_run import RunState, run_slice

VISION = {"model": "gpt-4o", "input": "Describe the dents of this Camry, its paint and its tyres."}


def _answer(request: dict[str, Any] | None = None, failed: bool = False) -> dict[str, Any]:
    """What the stand-in keeps of a line it ran answering `request` (`failed`: its 500)."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder, "in.jsonl")
        line = {"custom_id": "lot-1", "method": "POST", "url": RESPONSES_ENDPOINT, "body": request or VISION}
        source.write_bytes(orjson.dumps(line) + b"\n")
        state = RunState(str(Path(folder, "out.jsonl")), str(Path(folder, "err.jsonl")))
        answered = run_slice(source, state, 1, RESPONSES_ENDPOINT, "lot-1" if failed else None, "seed",
                             lambda: {})
    return answered["lot-1"]


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
    failed = _answer(failed=True)
    assert failed["status"] == 500
    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": failed}),
            _batch("batch_b", 20, 30, "shard-b", {"lot-1": _answer()})]
    assert batch_breaches(paid) == []


def test_a_lot_sent_again_after_an_answer_cut_at_its_cap_passes() -> None:
    cut = _answer({**VISION, "max_output_tokens": 16})
    assert cut["status"] == 200 and not cut["usable"]
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
        return _answer({**VISION, "text": {"format": {"type": "json_schema", "name": "t", "schema": schema}}})

    paid = [_batch("batch_a", 0, 10, "shard-a", {"lot-1": part("de", "fr")}),
            _batch("batch_b", 20, 30, "shard-b", {"lot-1": part("ru")})]
    assert batch_breaches(paid) == []
    paid[1] = _batch("batch_b", 20, 30, "shard-b", {"lot-1": part("de", "fr")})
    assert len(batch_breaches(paid)) == 1
