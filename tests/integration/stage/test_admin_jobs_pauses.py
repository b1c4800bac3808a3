"""`lotlens-admin jobs show` on a job whose shard holds its stage paused, as the stage's own code
left it: a batch no key can read (and the operator's release of it), a create refused for the
quota. On-call looks there first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.quota import QUOTA_FIRST_WAIT_S
from lotlens_common.stage.runner import housekeep, step
from tests.conftest import Infra, new_id
from tests.integration.stage.helpers import runtime, submit_lots
from tests.integration.stage.release_support import admin, sent_in_a_project_now_gone
from tests.servers import image_host
from tests.standin import Standin

pytestmark = pytest.mark.integration


def _shown(infra: Infra, settings: ServiceSettings, job_id: str) -> tuple[dict[str, Any], str]:
    """The job's one vision shard in `jobs show --json`, and the text screen."""
    shown, text = (admin(infra, settings, "jobs", "show", job_id, *flags) for flags in (["--json"], []))
    assert shown.returncode == 0 and text.returncode == 0, shown.stderr + text.stderr
    [vision] = json.loads(shown.stdout)["stages"]
    [shard] = vision["shards"]
    return shard, text.stdout


def _rounds(settings: ServiceSettings, engine: Engine, standin: Standin, housekeeping: bool) -> None:
    async def rounds() -> None:
        async with runtime(settings, engine, standin) as rt:
            if housekeeping:
                await housekeep(rt)
            await step(rt, watching=True)

    asyncio.run(rounds())


def test_jobs_show_says_a_shard_is_paused_since_when_and_why_and_the_release_decided(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path) -> None:
    # `jobs show` showed the shard `submitted` like any running batch: that it held the stage
    # paused, and that an operator had released it, was only in `shards paused`.
    job_id = new_id("job-")
    with image_host() as images:
        shard_id = sent_in_a_project_now_gone(settings, engine, tmp_path, job_id, images, 2)
    _rounds(settings, engine, standin, housekeeping=True)  # the new project's key: paused
    released = admin(infra, settings, "shards", "release", shard_id, "--fail",
                     "--reason", "the old OpenAI project was deleted", "--by", "on-call")
    assert released.returncode == 0, released.stderr

    shard, text = _shown(infra, settings, job_id)

    assert f"shard {shard_id} submitted" in text
    assert "paused since " in text and "none of our batches created before" in text, text
    assert "released (fail) by on-call at " in text and "the stage carries it out at its next look" in text
    assert shard["pause"]["kind"] == "unreadable" and shard["pause"]["retry_in_s"] is None
    assert "none of our batches created before" in shard["pause"]["reason"]
    assert 0 <= shard["pause"]["age_s"] < 600 and shard["pause"]["since"]
    release = shard["release"]
    assert (release["decision"], release["by"], release["reason"]) == (
        "fail", "on-call", "the old OpenAI project was deleted")

    _rounds(settings, engine, standin, housekeeping=False)  # the stage carries the release out
    shard, text = _shown(infra, settings, job_id)
    assert shard["status"] == "collected" and shard["batch_status"] == "released"
    assert shard["pause"] is None and shard["release"]["decision"] == "fail"
    assert f"shard {shard_id} collected" in text and "released (fail) by on-call at " in text
    assert "carried out" in text


def test_jobs_show_says_a_building_shard_holds_the_quota_pause_and_when_it_is_tried_again(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a", "b"])
    standin.faults(api_faults=[{"scope": "batches", "method": "POST", "kind": "insufficient_quota"}])
    _rounds(settings, engine, standin, housekeeping=False)

    shard, text = _shown(infra, settings, job_id)

    assert shard["status"] == "building"
    pause = shard["pause"]
    assert pause["kind"] == "quota" and "insufficient_quota" in pause["reason"]
    assert QUOTA_FIRST_WAIT_S - 60 < pause["retry_in_s"] <= QUOTA_FIRST_WAIT_S
    assert shard["release"] is None
    assert "paused for the quota since " in text and "next try in " in text
