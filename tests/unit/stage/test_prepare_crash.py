"""A lot that fails at preparation (no image could be fetched) has its LotFailed published before
it is marked settled. A crash between the two left it in its shard, and recovery checked its
images again: the host answering by then, the lot was sent and described after its public
LotFailed, two contradicting outcomes for one lot, and vision paid for a failed lot."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from lotlens_common.events import LotFailed, VisionCompleted
from lotlens_common.images import ImageCheck
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.ports import Closing, Settlement, Stage
from lotlens_common.stage.recover import recover_building
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import RecentChecks, VisionStage
from tests.unit.stage.conftest import World, dead_images_unreachable, lots


class HostBackLater:
    """The image host is down at the first check and answers every later one."""

    def __init__(self) -> None:
        self.checks = 0

    async def __call__(self, urls: Sequence[str]) -> ImageCheck:
        self.checks += 1
        return ImageCheck(valid=(), unreachable=tuple(urls)) if self.checks == 1 else ImageCheck(
            valid=tuple(urls), unreachable=())


class Killed(BaseException):
    """The process dies here (not an Exception: nothing in the stage catches it)."""


def test_a_lot_failed_at_preparation_stays_failed_through_a_crash(world: World) -> None:
    spec = VisionStage("vision", ModelSettings(), HostBackLater(), recent=RecentChecks(ttl_s=0))
    world.stage = Stage(spec, world.store, world.batches, world.publisher, world.settings)
    world.store.add([LotWork("job-1", "lot-0", "c1", 1, 0, VisionWork(
        additional_info="Camry", image_urls=("https://img/a.jpg",), languages=("en",)))])
    settle = world.store.settle

    def dies_marking_it_failed(job_id: str, settlement: Settlement, closing: Closing | None = None) -> None:
        if settlement.failed:
            raise Killed
        settle(job_id, settlement, closing)

    world.store.settle = dies_marking_it_failed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        world.rounds()
    assert [event.lot_id for event in world.of(LotFailed)] == ["lot-0"]

    world.store.settle = settle  # type: ignore[method-assign]
    world.restart()  # a new process: the same store, OpenAI and Kafka
    world.stage = Stage(spec, world.store, world.batches, world.publisher, world.settings)
    asyncio.run(recover_building(world.stage))
    world.rounds(2)
    assert world.of(VisionCompleted) == [] and world.batches.batches == {}
    assert {event.lot_id for event in world.of(LotFailed)} == {"lot-0"}
    assert world.store.statuses() == {"lot-0": "failed"}


class BreaksOnLot1(VisionStage):
    def result_event(self, lot: LotWork[VisionWork], body: Any) -> Any:
        if lot.lot_id.endswith("lot-1"):
            raise RecursionError("maximum recursion depth exceeded")  # a defect reading one answer
        return super().result_event(lot, body)


def test_an_answer_that_cannot_be_read_fails_its_lot_not_its_whole_batch(world: World) -> None:
    """One output line whose reading raised anything but a model error ended the collection, every
    round: the batch's healthy lots never settled and its job never finished."""
    spec = BreaksOnLot1("vision", ModelSettings(), dead_images_unreachable, recent=RecentChecks(ttl_s=0))
    world.stage = Stage(spec, world.store, world.batches, world.publisher, world.settings)
    world.store.add(lots(3))
    world.rounds(6)
    assert [event.lot_id for event in world.of(VisionCompleted)] == ["job-1-lot-0", "job-1-lot-2"]
    assert list(world.failed()) == ["job-1-lot-1"]
