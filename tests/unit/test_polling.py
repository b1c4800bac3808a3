"""tests/polling.py: the one way a test waits for something that happens in the background."""

from __future__ import annotations

import time

import pytest

from tests.polling import wait_for


def test_a_condition_that_never_holds_fails_after_its_timeout_saying_what_was_awaited() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        wait_for(lambda: False, "the job to complete", timeout_s=0.3, every_s=0.05)
    assert str(failed.value) == "waited 0.3 s for the job to complete"
    assert 0.3 <= time.monotonic() - started < 2


def test_a_description_given_as_a_function_says_what_was_seen_last() -> None:
    polls: list[int] = []

    def settled() -> bool:
        polls.append(len(polls))
        return False

    with pytest.raises(AssertionError, match=r"^waited 0.2 s for 3 rows left \(poll \d+\)$") as failed:
        wait_for(settled, lambda: f"3 rows left (poll {polls[-1]})", timeout_s=0.2, every_s=0.05)
    assert f"(poll {polls[-1]})" in str(failed.value)  # read when it failed, not when the wait began
    assert len(polls) >= 2


def test_the_first_truthy_answer_is_returned_once_the_condition_holds() -> None:
    answers = iter([None, [], ["delivered"]])
    assert wait_for(lambda: next(answers), "a delivery", every_s=0.01) == ["delivered"]


def test_a_condition_holding_at_once_costs_no_sleep() -> None:
    started = time.monotonic()
    assert wait_for(lambda: 1, "one", every_s=5) == 1
    assert time.monotonic() - started < 1


def test_an_error_in_the_condition_ends_the_wait_at_once() -> None:
    # How a waiter gives up early (a process it waits on exited): it raises in its condition.
    def exited() -> bool:
        raise AssertionError("the gateway exited")

    with pytest.raises(AssertionError, match=r"^the gateway exited$"):
        wait_for(exited, "the gateway to answer", timeout_s=60)


def test_a_description_that_fails_leaves_the_wait_its_own_failure() -> None:
    def broken() -> str:
        raise ConnectionError("the broker is down")

    with pytest.raises(AssertionError, match=r"^waited 0.1 s for \(its description failed: ConnectionError"):
        wait_for(lambda: False, broken, timeout_s=0.1, every_s=0.02)
