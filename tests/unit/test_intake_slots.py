"""Intake slots: a job body is worked on only in a free slot, a small body needs none, and a body
that waits too long gets the contract's 503 (nothing is written before the slot is taken)."""

from __future__ import annotations

import asyncio

import pytest

from lotlens_gateway.errors import ApiError
from lotlens_gateway.intake_slots import IntakeSlots
from lotlens_gateway.metrics import GatewayMetrics

SMALL = 1000


def _in_work(metrics: GatewayMetrics) -> float | None:
    return metrics.registry.get_sample_value("lotlens_intake_jobs")


def test_a_second_job_body_waits_for_the_slot_and_a_small_body_does_not() -> None:
    metrics = GatewayMetrics()
    slots = IntakeSlots(1, SMALL, wait_s=5.0, metrics=metrics, waiting=1)
    order: list[str] = []

    async def scenario() -> None:
        first_in, release_first = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with slots.hold():
                order.append("first in")
                first_in.set()
                await release_first.wait()
                order.append("first out")

        async def second() -> None:
            async with slots.hold():
                order.append("second in")

        holder = asyncio.create_task(first())
        await first_in.wait()
        waiter = asyncio.create_task(second())
        if not slots.takes_slot(SMALL):  # a synchronous lot: no slot, no wait
            order.append("small in")
        assert _in_work(metrics) == 1
        release_first.set()
        await asyncio.gather(holder, waiter)

    asyncio.run(scenario())
    assert order == ["first in", "small in", "first out", "second in"]
    assert _in_work(metrics) == 0


def test_a_job_body_that_finds_no_slot_in_time_gets_503_with_retry_after() -> None:
    metrics = GatewayMetrics()
    slots = IntakeSlots(1, SMALL, wait_s=0.2, metrics=metrics, waiting=1)

    async def scenario() -> ApiError:
        taken = asyncio.Event()

        async def hold() -> None:
            async with slots.hold():
                taken.set()
                await asyncio.sleep(1.0)

        holder = asyncio.create_task(hold())
        await taken.wait()
        with pytest.raises(ApiError) as refused:
            async with slots.hold():
                raise AssertionError("admitted while the only slot was taken")
        await holder
        return refused.value

    error = asyncio.run(scenario())
    assert (error.status, error.code, error.headers) == (503, "INTAKE_BUSY", {"Retry-After": "10"})
    assert set(error.body()) == {"error", "message", "code", "details"}
    assert metrics.registry.get_sample_value("lotlens_intake_busy_total", {"reason": "waited"}) == 1
    assert _in_work(metrics) == 0


def test_a_job_body_is_read_only_while_fewer_than_slots_plus_waiting_are_admitted() -> None:
    # Bodies were read before they waited: five 62 MB jobs at once held four bodies in memory
    # while the fifth was worked on. Now one slot and one waiting place admit two bodies at once.
    metrics = GatewayMetrics()
    slots = IntakeSlots(1, SMALL, wait_s=5.0, metrics=metrics, waiting=1)

    async def scenario() -> list[bool]:
        answers: list[bool] = []
        async with (slots.admit(50 * SMALL, "a") as first, slots.admit(None, "b") as second,
                    slots.admit(50 * SMALL, "c") as third, slots.admit(SMALL, "c") as small):
            answers += [bool(first), bool(second), bool(third), bool(small)]
            assert metrics.registry.get_sample_value("lotlens_intake_admitted") == 2
            refused = slots.refusal()
            assert (refused.status, refused.code, refused.headers) == (503, "INTAKE_BUSY",
                                                                      {"Retry-After": "10"})
            assert refused.body()["details"] == {"waited_s": 0.0, "jobs_in_intake": 2}
        async with slots.admit(50 * SMALL) as later:  # the places are free again
            answers.append(bool(later))
        return answers

    assert asyncio.run(scenario()) == [True, True, False, True, True]
    assert metrics.registry.get_sample_value("lotlens_intake_busy_total", {"reason": "full"}) == 1
    assert metrics.registry.get_sample_value("lotlens_intake_admitted") == 0


def test_one_address_has_all_places_but_one_being_read() -> None:
    # Two bodies trickled from one address held both places: every other client's job got 503.
    metrics = GatewayMetrics()
    slots = IntakeSlots(1, SMALL, wait_s=5.0, metrics=metrics, waiting=2)

    async def scenario() -> list[bool]:
        async with (slots.admit(50 * SMALL, "a") as first, slots.admit(None, "a") as second,
                    slots.admit(50 * SMALL, "a") as third, slots.admit(SMALL, "a") as small):
            refused = slots.refusal("a")
            assert refused.body()["details"] == {"waited_s": 0.0, "jobs_in_intake": 2, "jobs_from_address": 2}
            async with slots.admit(50 * SMALL, "b") as other:
                answers = [first, second, third, small, other]
            first.read()  # read whole, it waits for the slot as any other
            async with slots.admit(50 * SMALL, "a") as after_read:
                answers.append(after_read)
        async with slots.admit(50 * SMALL, "a") as later:  # an address's places are free again
            return [bool(answer) for answer in [*answers, later]]

    assert asyncio.run(scenario()) == [True, True, False, True, True, True, True]
    assert metrics.registry.get_sample_value("lotlens_intake_busy_total", {"reason": "address"}) == 1
    assert metrics.registry.get_sample_value("lotlens_intake_admitted") == 0


def test_a_single_place_is_an_address_s_own() -> None:
    slots = IntakeSlots(1, SMALL, wait_s=5.0, metrics=GatewayMetrics(), waiting=0)

    async def scenario() -> bool:
        async with slots.admit(50 * SMALL, "a") as admitted:
            return bool(admitted)

    assert asyncio.run(scenario())
