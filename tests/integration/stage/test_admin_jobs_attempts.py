"""`lotlens-admin jobs show` on a job the vision stage runs against the stand-in: how many of its
lots are at each attempt and why they are sent again or failed (their commonest last errors)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.collect import watch
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.submit import flush_due
from tests.conftest import Infra, new_id
from tests.integration.admin_support import admin_env, run_admin
from tests.integration.stage.helpers import drive, lot_statuses, runtime, submit_lots, vision_spec
from tests.standin import Standin

pytestmark = pytest.mark.integration

# Three sends: the failing lots are still being sent again after the first.
STAGE = StageSettings(window_s=0.0, poll_interval_s=0.1, max_attempts=3)
NOTES = ["fine lot", "bad lot [standin:error]", "worse lot [standin:error]"]


async def _first_send_collected(settings: ServiceSettings, engine: Engine, standin: Standin,
                                job_id: str) -> None:
    """Send the job's lots once and collect that batch, sending nothing again."""
    async with runtime(settings, engine, standin, STAGE) as stage:
        await flush_due(stage)
        for _ in range(200):
            await watch(stage)
            if "submitted" not in lot_statuses(engine, "vision", job_id).values():
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the first batch was not collected: {lot_statuses(engine, 'vision', job_id)}")


def _vision(infra: Infra, engine: Engine, job_id: str) -> tuple[dict[str, Any], str]:
    env = admin_env(infra.kafka_bootstrap, engine.url.render_as_string(hide_password=False))
    shown, text = run_admin(env, "jobs", "show", job_id, "--json"), run_admin(env, "jobs", "show", job_id)
    assert shown.returncode == 0 and text.returncode == 0, shown.stderr + text.stderr
    [vision] = json.loads(shown.stdout)["stages"]
    return vision, text.stdout


def test_jobs_show_counts_lots_by_attempt_and_says_why_lots_are_sent_again(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # `jobs show` counted each stage's lots by state only: lots sent again and again showed as
    # `waiting`, like lots never sent, and why they came back was nowhere on the screen.
    job_id = new_id("job-")
    submit_lots(engine, job_id, NOTES)
    asyncio.run(_first_send_collected(settings, engine, standin, job_id))

    vision, text = _vision(infra, engine, job_id)

    assert vision["lots"] == {"done": 1, "waiting": 2}
    assert vision["attempts"] == {"1": 3}
    [error] = vision["errors"]
    assert (error["lots"], error["states"]) == (2, {"waiting": 2}), error
    assert "server_error" in error["error"], error
    assert vision["other_errors"] == 0
    assert "lots by attempt: 1st 3" in text
    assert f"last error of 2 lots (waiting 2): {error['error']}" in text


def test_jobs_show_names_the_reason_lots_failed_for_good(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, NOTES)
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id, stage=STAGE, seconds=60))

    vision, text = _vision(infra, engine, job_id)

    assert vision["lots"] == {"done": 1, "failed": 2}
    assert vision["attempts"] == {"1": 1, "3": 2}
    [error] = vision["errors"]
    assert (error["lots"], error["states"]) == (2, {"failed": 2}), vision
    assert "server_error" in error["error"] and "gave up after 3 attempts" in error["error"], error
    assert "lots by attempt: 1st 1, 3rd 2" in text
    assert "last error of 2 lots (failed 2): " in text


def test_jobs_show_counts_lots_failed_before_any_model_call_as_failed_with_their_reason(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Lots settled by preparation (none of their images could be fetched) were marked `done`
    # without a reason: the commonest way a lot fails read as a success in `jobs show`.
    job_id = new_id("job-missing-")  # every image URL of the job names "missing": unreachable
    submit_lots(engine, job_id, ["lot whose photos are gone", "another"])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id, stage=STAGE))

    vision, text = _vision(infra, engine, job_id)

    assert vision["lots"] == {"failed": 2}, vision
    [error] = vision["errors"]
    assert (error["lots"], error["states"]) == (2, {"failed": 2}), vision
    assert "image" in error["error"], error
    assert "last error of 2 lots (failed 2): " in text
