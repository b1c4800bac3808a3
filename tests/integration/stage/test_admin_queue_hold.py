"""On-call sees a stage's hold after OpenAI's queue refused a batch (`lotlens-admin shards paused`)
and ends it (`lotlens-admin stages release-hold`), instead of reading and writing the table by hand."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.work import VisionWork
from tests.conftest import Infra, new_id
from tests.integration.stage.helpers import submit_lots
from tests.integration.stage.release_support import admin

pytestmark = pytest.mark.integration


def _refused(engine: Engine, times: int) -> PostgresWorkStore[VisionWork]:
    """The vision stage's store after `times` refusals in a row of batches created since each."""
    store = PostgresWorkStore(engine, "vision", VisionWork)
    for _ in range(times):
        store.note_queue_refused(time.time() + 1)
    return store


def test_shards_paused_says_until_when_the_queue_holds_a_stage_and_after_how_many_refusals(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    _refused(engine, 2)
    shown = admin(infra, settings, "shards", "paused")
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("vision")]
    assert "queue held until " in line and "(2 refusals in a row)" in line, shown.stdout
    assert "translation" not in shown.stdout
    [alone] = admin(infra, settings, "stages", "holds").stdout.splitlines()
    assert alone.split("), ")[0] == line.split("), ")[0], alone  # until when, after how many refusals
    [hold] = admin_json(infra, settings)["queue_holds"]
    assert hold["stage"] == "vision" and hold["refusals"] == 2 and 100 < hold["left_s"] <= 120, hold


def test_release_hold_ends_the_stages_hold_for_every_instance_and_says_what_it_ended(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    store = _refused(engine, 1)
    released = admin(infra, settings, "stages", "release-hold", "vision")
    assert released.returncode == 0, released.stderr
    assert "vision" in released.stdout and "1 refusals in a row" in released.stdout, released.stdout
    assert store.queue_held().left_s == 0
    assert "queue held" not in admin(infra, settings, "shards", "paused").stdout
    again = admin(infra, settings, "stages", "release-hold", "vision")
    assert again.returncode == 0 and "no queue hold" in again.stdout, again


def test_jobs_show_says_a_stage_holding_the_jobs_lots_back_is_held_by_the_queue(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])
    _refused(engine, 1)
    shown = admin(infra, settings, "jobs", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "queue held until " in shown.stdout and "(1 refusals in a row)" in shown.stdout, shown.stdout
    [vision] = json.loads(admin(infra, settings, "jobs", "show", job_id, "--json").stdout)["stages"]
    assert vision["queue_hold"]["refusals"] == 1, vision


def admin_json(infra: Infra, settings: ServiceSettings) -> dict[str, list[dict[str, Any]]]:
    """`lotlens-admin shards paused --json` (a list of shards, as scripts read it) and `stages holds
    --json`, read."""
    shards = admin(infra, settings, "shards", "paused", "--json")
    holds = admin(infra, settings, "stages", "holds", "--json")
    assert shards.returncode == 0 and holds.returncode == 0, shards.stderr + holds.stderr
    listed = {"shards": json.loads(shards.stdout), "queue_holds": json.loads(holds.stdout)}
    assert all(isinstance(each, list) for each in listed.values()), listed
    return listed


def test_a_batch_created_before_a_release_and_refused_after_it_brings_no_hold_back(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    # The release kept `refused_at`: a batch another replica created while the queue was known full
    # (its claim came before the hold) counted as a refusal since, and held every replica 15 minutes.
    store = _refused(engine, 4)
    created_while_held = time.time()
    time.sleep(1.1)  # the hold's times are whole seconds apart from the batch's creation
    assert admin(infra, settings, "stages", "release-hold", "vision").returncode == 0
    assert store.note_queue_refused(created_while_held) is None
    assert store.queue_held().left_s == 0
