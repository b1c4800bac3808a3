"""The enqueued-token budget against a stand-in that enforces OpenAI's limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import Engine

from lotlens_common.events import VisionBatchSubmitted, VisionCompleted
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.work import LotWork, VisionWork
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    drive,
    job_events,
    submit_lots,
    vision_spec,
)
from tests.standin import serve_standin


def test_lots_wait_for_the_token_budget_instead_of_failing_with_token_limit_exceeded(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    job_id = new_id("job-")
    spec = vision_spec(settings)
    per_lot = spec.estimate_tokens(LotWork(job_id, "x", "c1", 6, 0, VisionWork(
        image_urls=("a", "b"), additional_info="lot n", languages=("en",))))
    # Room for two lots at a time, at OpenAI (the stand-in) and in our own budget alike.
    limit = 2 * per_lot + per_lot // 2
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


