"""Lots whose image checks ran out of the chunk's time go back to their queue unsent; the shard goes
with the lots that are ready (`Prepared.deferred`, `VisionStage.check_budget_s`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from lotlens_common.image_budget import current_window
from lotlens_common.images import ImageCheck
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage import submit
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import RecentChecks, VisionStage
from tests.unit.stage.conftest import World


class LateChecker:
    """Leaves the images named `late` unchecked while a deadline is set and `late` is on; records
    how many URLs each check had to start whatever the time."""

    def __init__(self) -> None:
        self.late, self.always = True, list[int]()

    async def __call__(self, urls: Sequence[str]) -> ImageCheck:
        window = current_window()
        self.always.append(window.always if window is not None else -1)
        late = tuple(url for url in urls if self.late and window is not None and "late" in url)
        checked = tuple(url for url in urls if url not in late)
        return ImageCheck(valid=checked, unreachable=(), sizes=dict.fromkeys(checked, 1000), unchecked=late)


def _lot(i: int, *names: str) -> LotWork[VisionWork]:
    return LotWork("job-1", f"job-1-lot-{i}", "c1", 6, 0, VisionWork(
        additional_info="Camry", image_urls=tuple(f"https://img/{name}-{i}.jpg" for name in names),
        languages=("en",)))


def test_lots_not_checked_in_time_wait_unsent_and_the_shard_goes_with_the_ready_ones(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit, "PREPARE_CHUNK", 3)
    checker = LateChecker()
    spec = VisionStage("vision", ModelSettings(), checker, recent=RecentChecks(ttl_s=0), check_budget_s=5.0)
    world.stage = Stage(spec, world.store, world.batches, world.publisher, world.settings)
    world.store.add([_lot(0, "a", "b"), _lot(1, "a", "late"), _lot(2, "c"),
                     _lot(3, "d"), _lot(4, "e"), _lot(5, "f")])
    asyncio.run(submit.flush_due(world.stage))

    (submitted,) = world.submitted()
    # Lot 1 had an image left unchecked; lots 3-5 were in the next chunk, never prepared.
    assert sorted(submitted.lot_ids) == ["job-1-lot-0", "job-1-lot-2"]
    assert checker.always == [2], "the first lot's two images are checked whatever the time"
    waiting = {row.lot.lot_id: row.lot.attempts for row in world.store.rows.values()
               if row.status == "waiting"}
    assert waiting == {f"job-1-lot-{i}": 0 for i in (1, 3, 4, 5)}, "no attempt used"
    assert world.failed() == {}

    checker.late = False
    asyncio.run(submit.flush_due(world.stage))
    assert sorted(lot_id for batch in world.submitted() for lot_id in batch.lot_ids) == [
        f"job-1-lot-{i}" for i in range(6)]


def test_deferred_lots_hold_no_room_of_the_token_budget_and_another_job_gets_it(world: World) -> None:
    spec = VisionStage("vision", ModelSettings(), LateChecker(), recent=RecentChecks(ttl_s=0),
                       check_budget_s=5.0)
    one_lot = spec.estimate_tokens(_lot(0, "a"))
    settings = world.settings.model_copy(update={"enqueued_token_limit": 2 * one_lot})
    world.stage = Stage(spec, world.store, world.batches, world.publisher, settings)
    world.store.add([replace(_lot(0, "a"), total_lots=2), replace(_lot(1, "late"), total_lots=2)])
    asyncio.run(submit.flush_due(world.stage))

    (sent,) = world.submitted()
    assert sent.lot_ids == ("job-1-lot-0",)
    assert world.store.tokens_enqueued() == one_lot, "what OpenAI holds is the lot sent, not the claim"

    other = LotWork("job-2", "job-2-lot-0", "c2", 1, 0, VisionWork(
        additional_info="Camry", image_urls=("https://img/b-0.jpg",), languages=("en",)))
    world.store.add([other])
    # Job 1's waiting lot is claimed first and deferred again: the room it did not use is job 2's.
    asyncio.run(submit.flush_due(world.stage))
    assert [batch.lot_ids for batch in world.submitted()] == [("job-1-lot-0",), ("job-2-lot-0",)]
    assert world.store.tokens_enqueued() == 2 * one_lot
