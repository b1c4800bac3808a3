"""A description cut off at its output budget (o4-mini's reasoning spends the same 4,000 tokens)
is asked once more with twice the room; a second cut-off, or another incomplete answer, fails."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lotlens_common.events import VisionCompleted
from tests.unit.stage.conftest import World, lots
from tests.unit.stage.fakes import described

USAGE = {"input_tokens": 1000, "output_tokens": 4000}


def cut_off_until(answers: int, reason: str = "max_output_tokens") -> tuple[list[int], Any]:
    """The budgets asked for, and an answer cut off (`reason`) for the first `answers` requests."""
    budgets: list[int] = []

    def answer(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        budgets.append(int(body["max_output_tokens"]))
        if len(budgets) > answers:
            return {**described(custom_id, body), "usage": USAGE}
        return {"status": "incomplete", "incomplete_details": {"reason": reason}, "usage": USAGE,
                "output": [{"type": "reasoning", "summary": []}]}

    return budgets, answer


def test_a_description_cut_off_at_its_budget_is_asked_again_with_twice_the_room(world: World) -> None:
    # It failed the lot: "the response is incomplete (max_output_tokens)", never asked again.
    budgets, world.batches.answer = cut_off_until(1)
    world.store.add(lots(1))

    world.rounds(4)

    assert budgets == [4000, 8000]
    assert world.failed() == {}
    [done] = world.of(VisionCompleted)
    assert done.usage is not None and done.usage.output_tokens == 8000  # both answers were billed


def test_a_description_cut_off_again_with_twice_the_room_fails_the_lot(world: World) -> None:
    world.settings = world.settings.model_copy(update={"max_attempts": 5})
    world.restart()
    budgets, world.batches.answer = cut_off_until(5)
    world.store.add(lots(1))

    world.rounds(6)

    assert budgets == [4000, 8000]
    assert world.failed() == {"job-1-lot-0": "the response is incomplete (max_output_tokens)"}


def test_a_description_stopped_for_another_reason_is_not_asked_again(world: World) -> None:
    budgets, world.batches.answer = cut_off_until(1, reason="content_filter")
    world.store.add(lots(1))

    world.rounds(4)

    assert budgets == [4000]
    assert world.failed() == {"job-1-lot-0": "the response is incomplete (content_filter)"}
