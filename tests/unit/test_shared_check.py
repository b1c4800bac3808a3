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
        now = [0.0]
        shared = SharedCheck(check, timeout_s=0.05, clock=lambda: now[0])
        with pytest.raises(TimeoutError):
            await shared.result()
        release.set()
        return await shared.result()  # before the loop runs again: the same call

    assert asyncio.run(give_up_then_wait()) == "answered"
    assert calls == [1]


def test_a_call_stuck_past_the_timeout_gives_way_to_another_while_a_thread_is_free() -> None:
    stuck, answer = threading.Event(), iter(["first", "second", "third"])
    started: list[str] = []

    def check() -> str:
        started.append(name := next(answer))
        if name != "third":
            stuck.wait(5)  # the first two hang (a dead connection), the third would answer
        return name

    async def probes() -> list[str]:
        now = [0.0]
        shared = SharedCheck(check, threads=2, timeout_s=0.05, clock=lambda: now[0])
        seen = []
        for _ in range(3):  # each probe comes after the last one's call became overdue
            try:
                seen.append(await shared.result())
            except TimeoutError:
                seen.append("timed out")
            now[0] += 0.05
        stuck.set()
        return seen

    # Two threads at most: the third probe joins the second call instead of starting a third.
    assert asyncio.run(probes()) == ["timed out", "timed out", "timed out"]
    assert started == ["first", "second"]
