"""On-call sees the refusals in a row that LotLensOpenAIQueueHeld fires on (`refusals > 0`), between
two holds too, while a try is built, sent and refused again: every view showed only a hold in force,
said none, and the alert read as stale."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import Engine, text

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.work import VisionWork
from tests.conftest import Infra, new_id
from tests.integration.stage.helpers import submit_lots
from tests.integration.stage.release_support import admin

pytestmark = pytest.mark.integration

SERIES = "3 batches refused in a row"


def _series_between_holds(engine: Engine, refusals: int) -> None:
    """The vision stage's row after `refusals` in a row, its last hold run out a minute ago."""
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO stage_queue_holds (stage, refusals, refused_at, held_until)
            VALUES ('vision', :refusals, now() - interval '5 minutes', now() - interval '1 minute')"""),
            {"refusals": refusals})


def test_stages_holds_and_shards_paused_show_a_series_whose_hold_ran_out(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    _series_between_holds(engine, 3)
    for command in (("stages", "holds"), ("shards", "paused")):
        shown = admin(infra, settings, *command)
        assert shown.returncode == 0, shown.stderr
        [line] = [line for line in shown.stdout.splitlines() if line.startswith("vision")]
        assert SERIES in line and "not held back right now" in line, shown.stdout
        assert "no stage is held back" not in shown.stdout, shown.stdout
    [series] = json.loads(admin(infra, settings, "stages", "holds", "--json").stdout)
    assert series["refusals"] == 3 and series["held"] is False and series["left_s"] == 0, series


def test_jobs_show_says_the_stage_of_the_job_has_batches_refused_in_a_row(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])
    _series_between_holds(engine, 3)
    shown = admin(infra, settings, "jobs", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert SERIES in shown.stdout and "not held back right now" in shown.stdout, shown.stdout
    [vision] = json.loads(admin(infra, settings, "jobs", "show", job_id, "--json").stdout)["stages"]
    assert vision["queue_hold"]["refusals"] == 3 and vision["queue_hold"]["held"] is False, vision


def test_release_hold_says_a_series_has_no_hold_to_release(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    _series_between_holds(engine, 3)
    released = admin(infra, settings, "stages", "release-hold", "vision")
    assert released.returncode == 0, released.stderr
    assert "nothing to release" in released.stdout and SERIES in released.stdout, released.stdout
    assert "a batch admitted ends the series" in released.stdout, released.stdout


def test_a_series_whose_hold_an_operator_released_says_so_instead_of_a_refusal(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    store = PostgresWorkStore(engine, "vision", VisionWork)
    for _ in range(2):
        store.note_queue_refused(time.time() + 1)  # batches created since each refusal
    assert admin(infra, settings, "stages", "release-hold", "vision").returncode == 0
    [line] = admin(infra, settings, "stages", "holds").stdout.splitlines()
    assert "2 batches refused in a row" in line and "its hold released by an operator at" in line, line


def test_a_series_ended_by_an_admitted_batch_shows_nowhere(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])
    _series_between_holds(engine, 0)
    assert "no stage is held back" in admin(infra, settings, "stages", "holds").stdout
    assert json.loads(admin(infra, settings, "stages", "holds", "--json").stdout) == []
    assert "no stage is held back" in admin(infra, settings, "shards", "paused").stdout
    shown = admin(infra, settings, "jobs", "show", job_id)
    assert "refused in a row" not in shown.stdout and "queue held" not in shown.stdout, shown.stdout
    [vision] = json.loads(admin(infra, settings, "jobs", "show", job_id, "--json").stdout)["stages"]
    assert vision["queue_hold"] is None, vision
