"""A vision lot's work row as the previous and the next release read it (a rolling upgrade, a
rollback): a field the previous release does not know is written apart (`work_ahead`), where its
claim does not look; one a later release writes there is ignored by this one."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine, text

from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.ports import Settlement
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.conftest import new_id
from tests.integration.stage import previous_work
from tests.integration.stage.helpers import enqueue, reachable_unless_missing

STAGE = "vision"


def _all(lots: list[LotWork[Any]]) -> tuple[int, int]:
    return len(lots), 0


def _enqueued(engine: Engine) -> tuple[str, PostgresWorkStore[VisionWork]]:
    job_id = new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, STAGE, [LotWork(job_id, "cut-off", "c1", 1, 0, VisionWork(
            additional_info="Camry", image_urls=("https://img.example.com/1.jpg",), languages=("en",)))])
    return job_id, PostgresWorkStore(engine, STAGE, VisionWork)


def _work_column(engine: Engine, job_id: str) -> str:
    """The row's work as a vision-batcher of the previous release reads it (`work::text`)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT work::text FROM stage_lots WHERE stage = :stage"
                                " AND job_id = :job_id"), {"stage": STAGE, "job_id": job_id})
        return str(row.scalar_one())


def test_a_lot_sent_again_with_more_room_reads_to_the_previous_release_as_before(engine: Engine) -> None:
    # Cut off at its output budget, the lot goes again with twice the room. In its work, the
    # previous release's claim raised "Extra inputs are not permitted": that pod sent and
    # collected nothing, every round, until it was replaced (and after a rollback, for good).
    job_id, work = _enqueued(engine)
    [lot] = work.claim(job_id, new_id("vision-"), 10, _all)
    settlement = Settlement.empty()
    settlement.again["the response is incomplete (max_output_tokens)"] = [lot.lot_id]
    settlement.rework.append(lot.with_work(lot.work.model_copy(update={"output_room": 2})))
    work.settle(job_id, settlement)

    previous = previous_work.VisionWork.model_validate_json(_work_column(engine, job_id))
    assert previous.image_urls == lot.work.image_urls  # sent by that release with its own room
    [again] = work.claim(job_id, new_id("vision-"), 10, _all)
    assert (again.lot_id, again.work.output_room) == ("cut-off", 2)


def test_a_field_a_later_release_writes_apart_is_ignored(engine: Engine) -> None:
    job_id, work = _enqueued(engine)
    with engine.begin() as conn:
        conn.execute(text("""UPDATE stage_lots SET work_ahead = '{"output_room": 2, "a_later_field": [1]}'
                              WHERE stage = :stage AND job_id = :job_id"""),
                     {"stage": STAGE, "job_id": job_id})
    [lot] = work.claim(job_id, new_id("vision-"), 10, _all)
    assert lot.work.output_room == 2


def test_a_suspect_goes_back_in_once_a_previous_release_pod_recorded_a_refusal_naming_an_image(
        engine: Engine) -> None:
    # A pod of this release left the front out after a refusal naming no image (`suspects`,
    # written apart). A pod of the previous release sent the lot whole, OpenAI refused it naming
    # the side, and that pod wrote `work` alone. The next pod of this release left out both the
    # side and the front, and listed the front missing, though nothing showed it was bad.
    front, side, rear = (f"https://img.test/{view}.jpg" for view in ("front", "side", "rear"))
    job_id = new_id("job-")
    with engine.begin() as conn:
        enqueue(conn, STAGE, [LotWork(job_id, "lot", "c1", 1, 0, VisionWork(
            additional_info="Camry", image_urls=(front, side, rear), languages=("en",)))])
    work, spec = PostgresWorkStore(engine, STAGE, VisionWork), _vision_stage()
    [lot] = work.claim(job_id, new_id("vision-"), 10, _all)
    [(lot, _)] = asyncio.run(spec.prepare([lot])).requests
    suspected = spec.retry_refused(lot, "invalid_image_format", "You uploaded an unsupported image.")
    assert suspected is not None and suspected.work.suspects == (front,)
    settlement = Settlement.empty()
    settlement.again["invalid_image_format"] = [lot.lot_id]
    settlement.rework.append(suspected)
    work.settle(job_id, settlement)

    previous = previous_work.VisionWork.model_validate_json(_work_column(engine, job_id))
    with engine.begin() as conn:
        previous_work.save_work(conn, STAGE, job_id, {"lot": previous.model_copy(
            update={"missing_images": (), "refused_images": (side,)})})

    [again] = work.claim(job_id, new_id("vision-"), 10, _all)
    [(prepared, body)] = asyncio.run(spec.prepare([again])).requests
    sent = [part["image_url"] for part in body["input"][0]["content"] if part["type"] == "input_image"]
    assert (sent, prepared.work.missing_images) == ([front, rear], (side,))


def _vision_stage() -> VisionStage:
    return VisionStage(STAGE, ModelSettings(image_detail="low"), reachable_unless_missing)
