"""A claimed lot's work is read without `model_validate_json`'s wrapper or a validator before its
fields, and its `LotWork` made without the frozen dataclass's `__init__`: the same work and lot as
the former reading gave, stale suspects dropped as before, over random rows."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import orjson
import pytest

from lotlens_common.stage.work import LotWork, TranslationWork, VisionWork, read_work, stored_work

URLS = tuple(f"https://img.test/{view}.jpg" for view in ("front", "side", "rear", "roof"))


def _former_stale_suspects(data: Any) -> Any:
    """The validator VisionWork ran before its fields (the reference)."""
    if isinstance(data, dict) and data.get("suspects") and (
            len(data.get("refused_images", ())) != data.get("refused_before_suspects", 0)):
        return {**data, "suspects": (), "refused_before_suspects": 0}
    return data


def _former_fields(work: str, ahead: str | None) -> dict[str, Any]:
    """The fields `read_work` gave a VisionWork row before (the reference)."""
    data = orjson.loads(work)
    if ahead is not None:
        data = {**data, **{name: value for name, value in orjson.loads(ahead).items()
                           if name in VisionWork.model_fields}}
    defaults = {name: field.get_default(call_default_factory=True)
                for name, field in VisionWork.model_fields.items() if not field.is_required()}
    return {**defaults, **{name: tuple(value) if isinstance(value, list) else value
                           for name, value in _former_stale_suspects(data).items()}}


def _random_work(rng: random.Random) -> VisionWork:
    urls = tuple(rng.sample(URLS, rng.randint(1, len(URLS))))
    # Built field by field: fresh or stale, the suspects are kept, as a row may hold them.
    return VisionWork.model_construct(
        image_urls=urls, languages=("en", "de"), additional_info=rng.choice(["", "Camry"]),
        missing_images=tuple(rng.sample(urls, rng.randint(0, 1))),
        refused_images=tuple(rng.sample(urls, rng.randint(0, min(2, len(urls))))),
        suspects=tuple(rng.sample(urls, rng.randint(0, min(2, len(urls))))),
        refused_before_suspects=rng.randint(0, 2), output_room=rng.choice([1, 2]))


@pytest.mark.parametrize("seed", range(4))
def test_random_rows_read_as_the_former_reading_read_them(seed: int) -> None:
    rng = random.Random(seed)
    dropped = kept = 0
    for _ in range(500):
        work = _random_work(rng)
        written, apart = stored_work(work)
        # As the store writes it (the fields a previous release lacks apart), and all in `work`
        # (as a later release might).
        for text, ahead in ((orjson.dumps(written, default=_model_json).decode(),
                             None if apart is None else orjson.dumps(apart).decode()),
                            (work.model_dump_json(), None)):
            read = read_work(VisionWork, text, ahead)
            assert type(read) is VisionWork and dict(read) == _former_fields(text, ahead), (text, ahead)
            dropped += bool(work.suspects) and not read.suspects
            kept += bool(read.suspects)
    assert dropped and kept  # suspects chosen before a refusal were dropped, the others kept


def _model_json(value: object) -> orjson.Fragment:
    assert isinstance(value, VisionWork)
    return orjson.Fragment(value.model_dump_json())


def test_a_work_s_stale_suspects_are_dropped_however_it_is_made() -> None:
    stale = {"image_urls": URLS, "languages": ("en",), "refused_images": URLS[:1], "suspects": URLS[1:2]}
    assert VisionWork(**stale).suspects == ()
    assert VisionWork.model_validate(stale).suspects == ()
    assert VisionWork.model_validate_json(orjson.dumps(stale)).suspects == ()
    kept = {**stale, "refused_before_suspects": 1}
    assert VisionWork(**kept).suspects == URLS[1:2]


def test_no_validator_runs_before_a_work_s_fields() -> None:
    # One before them had pydantic build each claimed row's work as a dict first: 2.9 us a lot
    # where the JSON is read in 2.1.
    validators = VisionWork.__pydantic_decorators__.model_validators.values()
    modes = [validator.info.mode for validator in validators]
    assert "before" not in modes


@pytest.mark.parametrize("work", [
    VisionWork(image_urls=URLS, languages=("en",)),
    TranslationWork(english_html="<p>Dent.</p>", languages=("en", "de"), translated={"fr": "x"}),
])
def test_a_lot_made_by_position_is_the_lot_its_init_makes(work: VisionWork | TranslationWork) -> None:
    made = LotWork.made("job", "lot", "c1", 7, 2, work)
    built = LotWork("job", "lot", "c1", 7, 2, work)
    assert made == built and vars(made) == vars(built)
    assert dataclasses.replace(made, attempts=3) == LotWork("job", "lot", "c1", 7, 3, work)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.attempts = 3  # type: ignore[misc]
