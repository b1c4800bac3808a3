"""What preparing a chunk of vision lots does per lot: every lot judged once, known images not checked,
and the images of a lot with nothing refused or suspected chosen in one look, as before."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from lotlens_common.images import ImageCheck
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.core.limits import fit_request_images
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher import vision_stage
from lotlens_vision_batcher.vision_stage import VisionStage

POOL = tuple(f"https://img.example/{i}.jpg" for i in range(4))


def _lots(count: int, missing: tuple[str, ...] = ()) -> list[LotWork[VisionWork]]:
    return [LotWork("job-1", f"lot-{i}", "c1", count, 1, VisionWork(
        image_urls=POOL, languages=("en",), missing_images=missing)) for i in range(count)]


class Checker:
    """Every image usable; records the URLs asked about."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    async def __call__(self, urls: Sequence[str]) -> ImageCheck:
        self.asked.append(tuple(urls))
        return ImageCheck(valid=tuple(urls), unreachable=(), sizes={url: 1000 for url in urls})


def test_each_lot_is_judged_once_for_an_earlier_verdict_of_no_usable_image(
        monkeypatch: pytest.MonkeyPatch) -> None:
    judged: list[str] = []
    judge = vision_stage._failed_before

    def counting(lot: LotWork[VisionWork]) -> bool:
        judged.append(lot.lot_id)
        return judge(lot)

    monkeypatch.setattr(vision_stage, "_failed_before", counting)
    lots = [*_lots(3), *_lots(2, missing=POOL)]
    prepared = asyncio.run(VisionStage("vision", ModelSettings(), Checker()).prepare(lots))

    assert sorted(judged) == sorted(lot.lot_id for lot in lots)
    assert len(prepared.requests) == 3 and len(prepared.settled) == 2


def test_a_chunk_whose_images_all_have_fresh_verdicts_checks_none_and_sends_every_lot() -> None:
    checker = Checker()
    stage = VisionStage("vision", ModelSettings(), checker)
    asyncio.run(stage.prepare(_lots(2)))
    prepared = asyncio.run(stage.prepare(_lots(5)))

    assert checker.asked == [POOL]
    assert [len(body["input"][0]["content"]) for _, body in prepared.requests] == [len(POOL) + 1] * 5


def test_the_estimate_counts_only_the_images_a_check_left_usable() -> None:
    stage = VisionStage("vision", ModelSettings(), Checker())
    whole, = _lots(1)
    half = whole.with_work(whole.work.model_copy(update={"missing_images": POOL[:2]}))

    per_image = (stage.estimate_tokens(whole) - stage.estimate_tokens(half)) // 2
    assert per_image > 0
    assert stage.estimate_tokens(whole) - 4 * per_image == stage.estimate_tokens(
        whole.with_work(whole.work.model_copy(update={"missing_images": POOL})))


def _former_request_images(work: VisionWork, usable: dict[str, int]) -> tuple[list[str], tuple[str, ...]]:
    """The images of a lot's request, and those missing from it, as `prepare` chose them before
    its look for the lots with nothing refused, suspected or left out (the reference)."""
    refused = set(work.refused_images)
    sendable = [url for url in work.image_urls if url in usable and url not in refused]
    valid, _ = fit_request_images([url for url in sendable if url not in work.suspects[-1:]] or sendable,
                                  usable)
    sent = set(valid)
    return valid, tuple(url for url in work.image_urls if url not in sent)


@pytest.mark.parametrize("seed", range(4))
def test_random_lots_send_the_images_the_former_choice_sent(seed: int) -> None:
    rng = random.Random(seed)
    urls = [f"https://img.example/{i}.jpg" for i in range(8)]
    missing = 0
    for _ in range(3000):
        # Duplicates, unusable images, images too big for a request or counted as 20 MB, refusals
        # and suspects, each now and then; most lots have none of them.
        mine = tuple(rng.choice(urls) for _ in range(rng.randint(0, 6)))
        usable = {url: rng.choice([1000, 1000, 1000, 0, 19_000_000, 21_000_000]) for url in urls
                  if rng.random() < 0.9}
        work = VisionWork.model_construct(
            image_urls=mine, languages=("en",),
            refused_images=tuple(rng.sample(mine, min(len(mine), rng.choice([0, 0, 0, 1])))),
            suspects=tuple(rng.sample(mine, min(len(mine), rng.choice([0, 0, 0, 1, 2])))))
        chosen = vision_stage._request_images(work, usable)
        assert chosen == _former_request_images(work, usable), (mine, usable, work)
        missing += bool(chosen[1])
    assert 0 < missing < 3000
