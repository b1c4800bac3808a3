"""A check shared by concurrent callers: one call runs for all of them, and a caller that gives up
leaves it running instead of leaving a blocked thread behind."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lotlens_gateway.shared_check import SharedCheck


def test_callers_that_come_while_a_call_runs_share_its_answer() -> None:
    calls: list[int] = []
    release = threading.Event()

    def check() -> int:
        calls.append(1)
        release.wait(5)
        return len(calls)

    async def storm() -> list[int]:
        shared = SharedCheck(check)
        waiting = [asyncio.ensure_future(shared.result()) for _ in range(50)]
        await asyncio.sleep(0.1)
        release.set()
        answers = await asyncio.gather(*waiting)
        return [*answers, await shared.result()]  # the call ended: the next caller starts another

    assert asyncio.run(storm()) == [1] * 50 + [2]


def test_a_caller_that_gives_up_does_not_cancel_the_call() -> None:
    release = threading.Event()
    calls: list[int] = []

    def check() -> str:
        calls.append(1)
        return "answered" if release.wait(5) else "timed out"

    async def give_up_then_wait() -> str:
        shared = SharedCheck(check)
        with pytest.raises(TimeoutError):
            await shared.result(timeout_s=0.05)
        release.set()
        return await shared.result(timeout_s=5)  # before the loop runs again: the same call

    assert asyncio.run(give_up_then_wait()) == "answered"
    assert calls == [1]
