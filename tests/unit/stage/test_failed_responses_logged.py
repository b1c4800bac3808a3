"""A batch whose lines hold failed Responses (answered 200, `status: failed`) is logged as one
whose lines failed is: a few lines naming their lots, then one summary, never one per lot, and
never a signed URL's query string that OpenAI's message quotes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from tests.unit.stage.conftest import World, lots

SIGNED = "https://img.example/front.jpg?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=4f0c2b1a9e8d"


def failed_response(code: str, message: str) -> dict[str, Any]:
    return {"status": "failed", "output": [], "error": {"code": code, "message": message}}


@pytest.mark.parametrize(("code", "verdict"), [("server_error", "retried"),
                                               ("invalid_prompt", "failed")])
def test_a_batch_whose_every_response_failed_logs_a_few_lines_and_one_summary_not_one_per_lot(
        world: World, caplog: pytest.LogCaptureFixture, code: str, verdict: str) -> None:
    world.batches.answer = lambda custom_id, body: failed_response(code, f"m: could not read {SIGNED}")
    world.store.add(lots(40))
    with caplog.at_level(logging.WARNING):
        world.rounds(1)  # sent, collected once (and the lots sent again for a passing code)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 6, warnings
    assert "40 lots got no answer in all" in warnings[-1]
    assert f"'failed response {code}': 40" in warnings[-1]
    assert all("job-1-lot-" in line for line in warnings[:-1])
    assert not any("X-Amz" in line for line in warnings), warnings
    # What becomes of the lots is as before: a passing code sends them again, another fails them.
    assert len(world.failed()) == (0 if verdict == "retried" else 40)
    assert len(world.batches.batches) == (2 if verdict == "retried" else 1)


def test_the_lines_of_a_batch_that_failed_whole_do_not_quote_signed_urls(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    def refused(custom_id: str, body: Mapping[str, Any]) -> tuple[int, str, str]:
        return 400, "invalid_request_error", f"Error while downloading {SIGNED}."

    world.batches.answer = refused
    world.store.add(lots(3))
    with caplog.at_level(logging.WARNING):
        world.rounds(1)
    lines = [r.getMessage() for r in caplog.records if "got no answer" in r.getMessage()]
    assert len(lines) == 3 and all("https://img.example/front.jpg?" in line for line in lines), lines
    assert not any("X-Amz" in line for line in lines), lines
