"""Which sends count against a lot's `max_attempts`: only those OpenAI ran.

A batch OpenAI refused whole before running a request (the organisation's enqueued-token limit,
a file too large), a file it refused at upload, or lots that did not fit the shard's file say
nothing about the lots: counted, they used up the attempts of every lot in them, and a lot
failed for good after a few busy hours without ever being tried.
"""

from __future__ import annotations

import pytest

from lotlens_common.model.errors import ModelRequestError
from tests.unit.stage.conftest import World, lots

REFUSED_WHOLE = {
    "token_limit_exceeded": "Enqueued token limit reached for o4-mini in organization org-x. Limit: "
                            "1,000,000 enqueued tokens. Please try again once some in_progress "
                            "batches have been completed.",
    "file_too_large": "The input file is too large."}


@pytest.mark.parametrize("code", sorted(REFUSED_WHOLE))
def test_a_batch_refused_whole_sends_its_lots_again_without_using_an_attempt(world: World, code: str) -> None:
    world.batches.finish = "failed"
    world.batches.failure_errors = [{"code": code, "message": REFUSED_WHOLE[code], "line": None}]
    world.store.add(lots(2))
    for _ in range(2 * world.settings.max_attempts):  # more refusals than a lot has attempts
        world.rounds(1)
        world.store.queue_hold.until = 0.0  # the hold after a full queue has passed meanwhile
    assert world.failed() == {}
    world.batches.finish = "completed"
    world.rounds(2)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"]
    assert {event.attempt for event in world.submitted()} == {1}


def test_a_batch_that_failed_for_its_requests_uses_an_attempt(world: World) -> None:
    world.batches.finish = "failed"
    world.batches.failure_errors = [{"code": "invalid_request", "message": "bad body", "line": 1}]
    world.store.add(lots(1))
    world.rounds(2 * world.settings.max_attempts)
    assert "gave up after 2 attempts" in world.failed()["job-1-lot-0"]


def test_lots_left_out_of_a_full_file_go_again_without_using_an_attempt(world: World) -> None:
    world.stage.max_file_bytes = 10  # one request a file
    world.store.add(lots(3))
    world.rounds(4)
    assert len(world.completed()) == 3
    assert [event.attempt for event in world.submitted()] == [1, 1, 1]


def test_lots_of_a_file_refused_at_upload_go_again_without_using_an_attempt(world: World) -> None:
    world.batches.errors["upload"] = [ModelRequestError("HTTP 400 file_too_large: File is too large.",
                                                        400, "file_too_large")] * 3
    world.store.add(lots(1))
    world.rounds(5)
    assert world.completed() == ["job-1-lot-0"]
    assert [event.attempt for event in world.submitted()] == [1]
