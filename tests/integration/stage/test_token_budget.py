"""The enqueued-token budget against a stand-in that enforces OpenAI's limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2
from sqlalchemy import Engine

from lotlens_common.events import VisionBatchSubmitted, VisionCompleted
from lotlens_common.model.batch_files import batch_line
from lotlens_common.model.vision import vision_request_body
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.runner import step
from lotlens_common.stage.work import LotWork, VisionWork
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    drive,
    job_events,
    lot_statuses,
    runtime,
    submit_lots,
    vision_spec,
)
from tests.standin import batch_reaching, serve_standin

PAST_VALIDATION = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")


def _two_and_a_half_lots(settings: ServiceSettings) -> int:
    """An enqueued-token limit with room for two 2-image lots, by the stage's own estimate."""
    per_lot = vision_spec(settings).estimate_tokens(LotWork("job", "x", "c1", 6, 0, VisionWork(
        image_urls=("a", "b"), additional_info="lot n", languages=("en",))))
    return 2 * per_lot + per_lot // 2


def _batch_status(api: httpx2.Client, settings: ServiceSettings, lots: int) -> str:
    """The status a batch of `lots` 2-image lots reaches past validation, created on the stand-in."""
    content = b"".join(batch_line(f"lot-{i}", vision_request_body(
        "lot n", [f"https://img.test/{i}-a.jpg", f"https://img.test/{i}-b.jpg"], settings.models))
        for i in range(lots))
    upload = api.post("/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    file_id = upload.json()["id"]
    batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/responses",
                                       "completion_window": "24h"}).json()
    return str(batch_reaching(api, batch["id"], PAST_VALIDATION)["status"])


def test_the_standin_counts_images_as_openai_does_so_its_token_limit_binds(
        settings: ServiceSettings, tmp_path: Path) -> None:
    # It counted 85 tokens an image: a 2-image o4-mini lot cost 530 there, and the limit the
    # stage test below sets admitted some 27 lots at the stand-in where the stage admits two.
    limit = _two_and_a_half_lots(settings)
    with (serve_standin(tmp_path / "standin", enqueued_token_limit=limit, in_progress_seconds=0.1) as standin,
          httpx2.Client(base_url=standin.base_url, timeout=10) as api):
        assert _batch_status(api, settings, 3) == "failed"
        assert _batch_status(api, settings, 2) != "failed"


def test_lots_wait_for_the_token_budget_instead_of_failing_with_token_limit_exceeded(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    job_id = new_id("job-")
    spec = vision_spec(settings)
    # Room for two lots at a time, at OpenAI (the stand-in) and in our own budget alike.
    limit = _two_and_a_half_lots(settings)
    stage = StageSettings(window_s=0.0, poll_interval_s=0.1, max_attempts=1, enqueued_token_limit=limit)
    with serve_standin(tmp_path / "standin", enqueued_token_limit=limit, in_progress_seconds=0.3) as standin:
        submit_lots(engine, job_id, [f"lot {i}" for i in range(6)])
        asyncio.run(drive(settings, engine, standin, spec, job_id, stage=stage, seconds=60))
        ours = [m for m in standin.stats()["batch_metadata"] if m["lotlens_job_id"] == job_id]

    events = job_events(settings, settings.topics.vision, job_id, 9)
    batches = [e.event for e in events if isinstance(e.event, VisionBatchSubmitted)]
    completed = sorted(e.event.lot_id for e in events if isinstance(e.event, VisionCompleted))
    assert completed == [f"lot-{i}" for i in range(6)]  # max_attempts=1: a failed batch would fail lots
    assert len(ours) == len(batches) >= 3
    assert all(len(batch.lot_ids) <= 2 for batch in batches)



def test_another_clients_lot_is_sent_while_the_big_job_ahead_of_it_still_waits(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    # Oldest job first, the first job's claim took all the room and the loop stopped: every other
    # client's job waited until the big one's last lot was sent.
    big, small = new_id("job-"), new_id("job-")
    limit = _two_and_a_half_lots(settings)
    stage = StageSettings(window_s=0.0, poll_interval_s=0.1, max_attempts=1, enqueued_token_limit=limit)
    with serve_standin(tmp_path / "standin", enqueued_token_limit=limit, in_progress_seconds=0.3) as standin:
        submit_lots(engine, big, [f"lot {i}" for i in range(10)], client_id="client-a")

        async def rounds() -> dict[str, str]:
            async with runtime(settings, engine, standin, stage) as rt:
                await step(rt, watching=True)  # the big job's first batch fills the budget
                submit_lots(engine, small, ["lot 0"], client_id="client-b")
                for _ in range(300):
                    await step(rt, watching=True)
                    if lot_statuses(engine, "vision", small) != {"lot-0": store.WAITING}:
                        break
                    await asyncio.sleep(0.1)
                return lot_statuses(engine, "vision", big)

        big_when_small_went = asyncio.run(rounds())
    assert lot_statuses(engine, "vision", small) != {"lot-0": store.WAITING}, "the small job was never sent"
    assert store.WAITING in big_when_small_went.values(), "the small job waited for the big one's last lot"


def test_a_queue_filled_by_another_workload_is_backed_off_from_not_hammered(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    # Another workload of the organisation fills the model's queue (our budget cannot see it):
    # each batch failed `token_limit_exceeded`, its lot went back uncounted, and the next round
    # checked the images, uploaded and created another one, until the queue drained.
    job_id = new_id("job-")
    limit = _two_and_a_half_lots(settings)
    stage = StageSettings(window_s=0.0, poll_interval_s=0.1, enqueued_token_limit=0)
    with (serve_standin(tmp_path / "standin", enqueued_token_limit=limit, in_progress_seconds=600) as standin,
          httpx2.Client(base_url=standin.base_url, timeout=10) as api):
        assert _batch_status(api, settings, 2) == "in_progress"  # the other workload's, running on
        submit_lots(engine, job_id, ["lot 0"])

        async def rounds() -> None:
            async with runtime(settings, engine, standin, stage) as rt:
                for _ in range(40):
                    await step(rt, watching=True)
                    await asyncio.sleep(0.1)

        asyncio.run(rounds())
        ours = [m for m in standin.stats()["batch_metadata"] if m.get("lotlens_job_id") == job_id]
    assert len(ours) == 1  # refused once, then held back (a minute, doubling) rather than resent
    assert lot_statuses(engine, "vision", job_id) == {"lot-0": store.WAITING}  # no attempt used


def test_a_queue_refusal_collected_by_one_instance_holds_back_every_instance(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    # The hold lived in the process: only the replica that collected the refused batch held back;
    # another one checked the images, uploaded and created a batch refused the same way at once.
    job_id = new_id("job-")
    limit = _two_and_a_half_lots(settings)
    stage = StageSettings(window_s=0.0, poll_interval_s=0.1, enqueued_token_limit=0)
    with (serve_standin(tmp_path / "standin", enqueued_token_limit=limit, in_progress_seconds=600) as standin,
          httpx2.Client(base_url=standin.base_url, timeout=10) as api):
        assert _batch_status(api, settings, 2) == "in_progress"  # the other workload's, running on
        submit_lots(engine, job_id, ["lot 0"])

        def ours() -> int:
            return len([m for m in standin.stats()["batch_metadata"] if m.get("lotlens_job_id") == job_id])

        async def rounds() -> None:
            async with runtime(settings, engine, standin, stage) as first, \
                    runtime(settings, engine, standin, stage) as second:
                for _ in range(100):  # the first instance sends the lot and collects the refusal
                    await step(first, watching=True)
                    if ours() and lot_statuses(engine, "vision", job_id) == {"lot-0": store.WAITING}:
                        break
                    await asyncio.sleep(0.1)
                assert ours() == 1 and first.store.queue_held().left_s > 0
                for _ in range(5):
                    await step(second, watching=True)
                    await asyncio.sleep(0.1)

        asyncio.run(rounds())
        assert ours() == 1, "the second instance created a batch while the queue was full"
    assert lot_statuses(engine, "vision", job_id) == {"lot-0": store.WAITING}
