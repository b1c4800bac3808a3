"""Waiting for something a test cannot be told about (a background thread, another process, the
broker): one poll with a deadline, whose failure says what was awaited and what was seen last."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str | Callable[[], str], *, timeout_s: float = 30.0,
             every_s: float = 0.05, sleep: Callable[[float], object] = time.sleep) -> T:
    """Call `condition` every `every_s` until it answers something truthy, and return that answer.

    After `timeout_s` the wait fails with "waited {timeout_s} s for {what}"; a `what` given as a
    function is called then, so it can say what was seen last. To give up early (a process waited
    on exited), the condition raises: its error ends the wait at once. `sleep` pauses between
    polls: a browser test passes its page's own wait, the only time Playwright runs route handlers.
    """
    deadline = time.monotonic() + timeout_s
    while not (answer := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout_s:g} s for {_described(what)}")
        sleep(every_s)
    return answer


def _described(what: str | Callable[[], str]) -> str:
    # A description that asks the broker or the database what it sees fails when that is what
    # broke: the wait's own message then says so rather than being replaced by the error.
    if not callable(what):
        return what
    try:
        return what()
    except Exception as exc:  # any failure to describe is reported, not raised
        return f"(its description failed: {exc!r})"
