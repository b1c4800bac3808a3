"""The oldest batch's age on PostgreSQL (`lotlens_openai_oldest_batch_age_seconds`, read by
LotLensOpenAIBatchOverAge past 20 h) and a shard's age in `lotlens-admin jobs show`: its batch's
at OpenAI, not the time since its lots were claimed."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, text

from lotlens_admin.job_report import read_report
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.work import LotWork, TranslationWork
from tests.conftest import new_id
from tests.integration.stage.helpers import enqueue

pytestmark = pytest.mark.integration

STAGE = "translation"
HOURS_21 = 21 * 3600
ALERT_S = 72_000  # LotLensOpenAIBatchOverAge: 20 h


def _all(lots: list[LotWork[Any]]) -> tuple[int, int]:
    return len(lots), 0


def _claimed(engine: Engine, work: PostgresWorkStore[TranslationWork], job_id: str, ago_s: float) -> str:
    """A shard of one lot of the job, claimed `ago_s` ago (its id)."""
    with engine.begin() as conn:
        enqueue(conn, STAGE, [LotWork(job_id, new_id("lot-"), "c1", 2, 0, TranslationWork(
            english_html="<p>x</p>", languages=("en",)))])
    shard_id = new_id("translation-")
    assert work.claim(job_id, shard_id, 1, _all)
    with engine.begin() as conn:
        conn.execute(text("UPDATE stage_shards SET created_at = now() - make_interval(secs => :ago) "
                          "WHERE shard_id = :shard_id"), {"ago": ago_s, "shard_id": shard_id})
    return shard_id


def _ages(engine: Engine, job_id: str) -> dict[str, float]:
    with engine.connect() as conn:
        [stage] = read_report(conn, job_id).stages
    return {shard.shard_id: shard.age_s for shard in stage.shards}


def test_a_batch_created_now_for_a_shard_claimed_21_hours_ago_is_not_over_age(engine: Engine) -> None:
    # Its sends refused for the quota over a weekend: the shard kept its claim time through them.
    work, job_id = PostgresWorkStore(engine, STAGE, TranslationWork), new_id("job-")
    shard_id = _claimed(engine, work, job_id, HOURS_21)
    work.record_batch(shard_id, new_id("batch_"), 1, time.time(), 0)

    assert work.figures().oldest_batch_age_s < 60
    assert _ages(engine, job_id)[shard_id] < 60


def test_a_batch_created_21_hours_ago_in_a_shard_made_now_reads_its_own_age(engine: Engine) -> None:
    # Adopted by the reconciler (its shard row was lost): a new row holds an old batch.
    work, job_id = PostgresWorkStore(engine, STAGE, TranslationWork), new_id("job-")
    young = _claimed(engine, work, job_id, 0)
    work.record_batch(young, new_id("batch_"), 1, time.time(), 0)
    adopted = _claimed(engine, work, job_id, 0)
    work.record_batch(adopted, new_id("batch_"), 1, time.time() - HOURS_21, 0)

    assert HOURS_21 <= work.figures().oldest_batch_age_s < HOURS_21 + 60
    assert _ages(engine, job_id)[adopted] >= HOURS_21


def test_a_shard_recorded_without_its_batch_creation_reads_its_claim_age(engine: Engine) -> None:
    # Recorded before migration 0038, or by a release without it during a rolling upgrade.
    work, job_id = PostgresWorkStore(engine, STAGE, TranslationWork), new_id("job-")
    shard_id = _claimed(engine, work, job_id, HOURS_21)
    work.record_batch(shard_id, new_id("batch_"), 1, None, 0)

    assert work.figures().oldest_batch_age_s >= HOURS_21 > ALERT_S
