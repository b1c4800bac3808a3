"""Direct mode against a model server that goes down mid-round, on PostgreSQL, Kafka and the
stand-in's answers: a request the server refused never left the machine, and costs its lot no
attempt; one the server took and fell over on did reach it, and uses up its attempts."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from lotlens_common.model.openai_client import call_responses, make_openai_client
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import postgres_stage
from lotlens_common.tables import stage_lots
from tests.conftest import new_id
from tests.integration.stage.helpers import STAGE, lot_statuses, open_lots, submit_lots, vision_spec
from tests.integration.stage.restarting_model import RestartingModel, restarting_model
from tests.standin import Standin

pytestmark = pytest.mark.integration

NOTES = ["Camry, front collision", "Civic, hail", "F-150, rollover"]
# Rounds enough for every outcome here; the loop ends sooner once no lot is open.
ROUNDS = 3 * STAGE.max_attempts + 3


async def _rounds(settings: ServiceSettings, engine: Engine, model: RestartingModel, folder: Path,
                  job_id: str) -> int:
    """Stage rounds, the server restarted before each, until no lot of the job is open; how many."""
    async with make_openai_client("test", model.base_url, 10) as client:
        # One request at a time, in the shard's order: which line the server goes down on is known.
        batches = DirectBatches(partial(call_responses, client), 1, folder)
        rt: Stage[Any] = postgres_stage(engine, EventProducer(settings.kafka, "test"), batches,
                                 vision_spec(settings), STAGE.direct_mode())
        for done in range(1, ROUNDS + 1):
            if model.crash_marker is None:
                model.restart_mid_round()
            else:
                model.up()
            await step(rt, watching=True)
            if not open_lots(engine, "vision", job_id):
                return done
    return ROUNDS


def _last_error(engine: Engine, job_id: str, lot_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(stage_lots.c.last_error).where(
            stage_lots.c.job_id == job_id, stage_lots.c.lot_id == lot_id)).scalar_one())


def test_lots_a_restarting_model_server_refused_are_sent_again_not_failed(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path) -> None:
    # Each round the server answered one request and went down (restarting): the lines it then
    # refused were a batch's failed lines, each an attempt, and after MAX_ATTEMPTS such rounds
    # their lots failed for good although their requests never left the machine.
    job_id = new_id("job-")
    submit_lots(engine, job_id, NOTES)
    (tmp_path / "work").mkdir()
    with restarting_model(standin.base_url) as model:
        asyncio.run(_rounds(settings, engine, model, tmp_path / "work", job_id))
    assert lot_statuses(engine, "vision", job_id) == {"lot-0": store.DONE, "lot-1": store.DONE,
                                                      "lot-2": store.DONE}
    assert model.answered == dict.fromkeys(NOTES, 1) and not model.dropped


def test_a_request_that_brings_the_model_server_down_each_time_fails_after_its_attempts(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path) -> None:
    # The lot whose request kills the server reached it every time: it uses its attempts and then
    # fails (resent for ever, its job would never end); the lots refused after it in each round
    # go again, uncounted, and are described once it has failed.
    job_id = new_id("job-")
    crash = "Corolla, its images kill the server"
    submit_lots(engine, job_id, [crash, *NOTES[1:]])
    with restarting_model(standin.base_url) as model:
        model.crash_marker = crash
        (tmp_path / "work").mkdir()
        rounds = asyncio.run(_rounds(settings, engine, model, tmp_path / "work", job_id))
    assert lot_statuses(engine, "vision", job_id) == {"lot-0": store.FAILED, "lot-1": store.DONE,
                                                      "lot-2": store.DONE}
    assert model.dropped == {crash: STAGE.max_attempts}
    assert model.answered == dict.fromkeys(NOTES[1:], 1)
    assert rounds == STAGE.max_attempts + 1
    assert _last_error(engine, job_id, "lot-0") == (
        f"the model API was unavailable (http_503) (gave up after {STAGE.max_attempts} attempts)")
