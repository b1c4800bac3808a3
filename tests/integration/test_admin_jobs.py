"""`lotlens-admin jobs show`: where a job's lots are, run as on-call runs it (its own process)
against a job the stages' own code left half done, and one whose events never left the outbox."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, make_url, text

from lotlens_admin import job_report, jobs
from lotlens_admin.cli import main
from lotlens_admin.job_report import JobReport
from lotlens_common.envelope import Envelope
from lotlens_common.events import Event, JobSubmitted, LotFailed, LotSubmitted, VisionCompleted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.ports import Settlement
from lotlens_common.stage.work import LotWork, TranslationWork, VisionWork
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_result_store.handlers import handle as project
from lotlens_translator import handlers as translator_intake
from lotlens_vision_batcher import handlers as vision_intake
from tests.conftest import Infra, new_id
from tests.integration.admin_support import admin_env, run_admin

pytestmark = pytest.mark.integration

CLIENT, LANGUAGES, LOTS = "c1", ("en", "de"), 6


def _envelopes(events: Sequence[Event]) -> list[Envelope]:
    return [Envelope(client_id=CLIENT, event=event) for event in events]


def _accepted(job_id: str, lot_count: int) -> list[Event]:
    """A job's JobSubmitted and LotSubmitted events, as the gateway accepts them."""
    created = datetime.now(UTC).replace(microsecond=0)
    return [JobSubmitted(job_id=job_id, client_id=CLIENT, api_version="2.0", languages=LANGUAGES,
                         total_lots=lot_count, webhook_urls=(), created_at=created,
                         estimated_completion=created + timedelta(hours=1)),
            *(LotSubmitted(job_id=job_id, lot_id=f"lot-{i}", seq=i, total_lots=lot_count,
                           additional_info=f"car {i}", image_urls=(f"https://img.test/{job_id}/{i}.jpg",),
                           languages=LANGUAGES) for i in range(lot_count))]


def _everything(lots: list[LotWork[Any]]) -> tuple[int, int]:
    return len(lots), 0


def _half_done_job(engine: Engine, settings: ServiceSettings) -> dict[str, str]:
    """A job of 6 lots through the stages' own code: in vision 2 lots collected, 2 in a batch OpenAI
    still runs, 1 failed, 1 waiting for a shard; the 2 described lots in a translation shard whose
    batch is not created yet; the read models projected from the same events."""
    job_id = new_id("job-")
    accepted = _envelopes(_accepted(job_id, LOTS))
    vision_intake.handle(engine, None, accepted[1:])
    vision = PostgresWorkStore(engine, "vision", VisionWork)
    ids = {"job": job_id, "collected": new_id("vision-"), "stuck": new_id("vision-"),
           "failed": new_id("vision-"), "stuck_batch": new_id("batch_"),
           "translating": new_id("translation-")}
    vision.claim(job_id, ids["collected"], 2, _everything)
    vision.record_batch(ids["collected"], new_id("batch_"), 2, time.time(), 0)
    vision.close_shard(ids["collected"], "collected", "completed")
    vision.claim(job_id, ids["stuck"], 2, _everything)
    vision.record_batch(ids["stuck"], ids["stuck_batch"], 2, time.time(), 0)
    vision.note_batch_status(ids["stuck"], "in_progress")
    vision.claim(job_id, ids["failed"], 1, _everything)
    vision.record_batch(ids["failed"], new_id("batch_"), 1, time.time(), 0)
    vision.settle(job_id, Settlement([], {"no image could be fetched": ["lot-4"]}, [], {}, [], {}))
    vision.close_shard(ids["failed"], "collected", "completed")

    outcomes = _envelopes([
        *(VisionCompleted(job_id=job_id, lot_id=f"lot-{i}", english_html=f"<p>car {i}</p>",
                          languages=LANGUAGES, total_lots=LOTS, processed_images=1, missing_images=())
          for i in (0, 1)),
        LotFailed(job_id=job_id, lot_id="lot-4", stage="vision", reason="no image could be fetched",
                  total_lots=LOTS)])
    producer = EventProducer(settings.kafka, "test")
    translator_intake.handle(engine, producer, outcomes, topic=settings.topics.translation)
    PostgresWorkStore(engine, "translation", TranslationWork).claim(
        job_id, ids["translating"], 10, _everything)
    project(engine, producer, settings.topics.completions, accepted + outcomes)
    return ids


def test_a_half_done_job_shows_where_each_stage_holds_its_lots(infra: Infra, engine: Engine,
                                                                settings: ServiceSettings) -> None:
    ids = _half_done_job(engine, settings)
    env = admin_env(infra.kafka_bootstrap, infra.database_url)

    shown = run_admin(env, "jobs", "show", ids["job"], "--json")

    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["read_model"]["total_lots"] == LOTS
    assert report["read_model"]["lots"] == {"failed": 1, "pending": 3, "translating": 2}
    vision, translation = report["stages"]
    assert vision["stage"] == "vision" and not vision["cancelled"]
    assert vision["lots"] == {"done": 2, "failed": 1, "submitted": 2, "waiting": 1}
    shards = {shard["shard_id"]: shard for shard in vision["shards"]}
    assert {shard_id: shard["status"] for shard_id, shard in shards.items()} == {
        ids["collected"]: "collected", ids["stuck"]: "submitted", ids["failed"]: "collected"}
    stuck = shards[ids["stuck"]]
    assert (stuck["attempt"], stuck["batch_id"], stuck["batch_status"], stuck["lot_count"]) == (
        1, ids["stuck_batch"], "in_progress", 2)
    assert 0 <= stuck["age_s"] < 3600
    assert translation["stage"] == "translation"
    assert translation["lots"]["submitted"] == 2
    [building] = translation["shards"]
    assert (building["shard_id"], building["status"], building["batch_id"]) == (
        ids["translating"], "building", None)
    assert report["outbox"] == {"unpublished": {}, "oldest_age_s": None}

    text = run_admin(env, "jobs", "show", ids["job"])
    assert text.returncode == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert len(lines) <= 24  # one screen
    stuck_line = f"shard {ids['stuck']} submitted, attempt 1, {ids['stuck_batch']} (in_progress), 2 lots"
    assert stuck_line in text.stdout
    assert f"shard {ids['translating']} building, attempt 1, no batch yet" in text.stdout
    assert ids["collected"] not in text.stdout  # finished shards are counted, not listed
    assert any(line.startswith("vision") and "done 2, failed 1, submitted 2, waiting 1" in line
               for line in lines), lines
    assert "finished shards: collected 2" in text.stdout
    assert lines[-1].split() == ["outbox", "nothing", "unpublished"]


def test_a_job_whose_events_never_left_the_outbox_shows_them(infra: Infra, engine: Engine,
                                                              settings: ServiceSettings) -> None:
    job_id = new_id("job-")
    Outbox(engine, GatewayMetrics(), 1_000_000).append(settings.topics.submissions,
                                                      _envelopes(_accepted(job_id, 3)))
    env = admin_env(infra.kafka_bootstrap, infra.database_url)

    shown = run_admin(env, "jobs", "show", job_id, "--json")

    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["read_model"] is None and report["stages"] == []
    assert report["outbox"]["unpublished"] == {"JobSubmitted": 1, "LotSubmitted": 3}
    assert 0 <= report["outbox"]["oldest_age_s"] < 3600
    text = run_admin(env, "jobs", "show", job_id).stdout
    assert "4 unpublished: JobSubmitted 1, LotSubmitted 3" in text
    assert "not projected yet" in text


def test_an_unknown_job_is_one_line_and_exit_1(infra: Infra) -> None:
    job_id = new_id("job-")
    shown = run_admin(admin_env(infra.kafka_bootstrap, infra.database_url), "jobs", "show", job_id)
    assert (shown.returncode, shown.stdout) == (1, "")
    [line] = shown.stderr.splitlines()
    assert line.startswith("lotlens-admin: ") and job_id in line


def test_a_postgresql_that_refuses_connections_is_one_line_and_exit_3(infra: Infra) -> None:
    down = make_url(infra.database_url).set(host="127.0.0.1", port=1).render_as_string(hide_password=False)
    shown = run_admin(admin_env(infra.kafka_bootstrap, down), "jobs", "show", new_id("job-"))
    assert (shown.returncode, shown.stdout) == (3, "")
    [line] = shown.stderr.splitlines()
    assert line.startswith("lotlens-admin: PostgreSQL did not answer")


def test_the_report_is_read_in_one_snapshot_and_writes_nothing(
        infra: Infra, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The docstring promised one transaction of reads, but it ran READ COMMITTED: each query saw
    # the rows committed before it, so a stage settling lots between two queries showed them twice
    # or not at all. Each read now sees the same snapshot, in a transaction that cannot write.
    monkeypatch.setenv("DATABASE_URL", infra.database_url)
    seen: list[tuple[str, str]] = []

    def read_report(conn: Connection, job_id: str) -> JobReport:
        seen.append((str(conn.execute(text("SHOW transaction_isolation")).scalar_one()),
                     str(conn.execute(text("SHOW transaction_read_only")).scalar_one())))
        return job_report.read_report(conn, job_id)

    monkeypatch.setattr(jobs, "read_report", read_report)
    assert main(["jobs", "show", new_id("job-")]) == 1  # unknown: read all the same
    capsys.readouterr()
    assert seen == [("repeatable read", "on")]
