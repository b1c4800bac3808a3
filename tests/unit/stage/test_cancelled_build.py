"""A shard whose job was cancelled while it was `building` makes no batch (in-memory ports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from confluent_kafka import KafkaError, KafkaException
from sqlalchemy.exc import OperationalError

from lotlens_common.events import LotFailed
from lotlens_common.model.errors import ModelUnavailableError
from lotlens_common.model.usage import Usage
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.ports import KEY_REFUSED, Caused
from tests.unit.stage.conftest import World, lots


def test_a_shard_whose_job_was_cancelled_after_a_failed_create_makes_no_batch(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recovery built it again: batch-2 was created, then cancelled at the next watch, and OpenAI
    # billed what it had run meanwhile.
    monkeypatch.setattr(lifecycle, "CREATE_LANDS_S", 0.0)  # the failed create's batch did not land
    world.batches.errors["create"] = [ModelUnavailableError("HTTP 503 server_error")]
    world.store.add(lots(2))
    world.rounds()
    world.store.cancelled.add("job-1")
    world.rounds(2)
    assert (world.batches.batches, world.batches.cancel_asks) == ({}, [])
    assert set(world.store.statuses().values()) == {"cancelled"} and world.submitted() == []
    assert [s.status for s in world.store.shards_by_id.values()] == ["empty"]


def test_a_shard_claimed_just_before_its_job_was_cancelled_uploads_nothing(world: World) -> None:
    world.store.add(lots(2))
    world.store.cancelled.add("job-1")  # the claim read the queue before the cancellation landed
    world.rounds()
    assert world.batches.files == {} and world.batches.batches == {}
    assert set(world.store.statuses().values()) == {"cancelled"}


def test_a_cancelled_lot_billed_for_earlier_answers_reports_them_though_no_batch_is_made(
        world: World) -> None:
    # A vision lot sent again after an answer it could not use (or a translation lot with a part
    # of its languages done): marked cancelled with no event, its job's usage left the answer out.
    paid = Usage(input_tokens=4000, output_tokens=12_000, model="gpt-test")
    [lot, other] = lots(2)
    world.store.add([replace(lot, work=lot.work.model_copy(update={"earlier_usage": paid})), other])
    world.store.cancelled.add("job-1")
    world.rounds()
    assert set(world.store.statuses().values()) == {"cancelled"} and world.batches.batches == {}
    [failed] = world.of(LotFailed)
    assert (failed.lot_id, failed.usage) == ("job-1-lot-0", paid)
    assert "cancelled" in failed.reason, failed.reason


def test_a_job_cancelled_while_its_file_was_uploaded_gets_no_batch_and_the_file_is_deleted(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    uploads = world.batches.upload_batch_file

    async def cancelled_meanwhile(path: Path) -> str:
        file_id = await uploads(path)
        world.store.cancelled.add("job-1")  # the cancel landed while the file went up
        return file_id

    monkeypatch.setattr(world.batches, "upload_batch_file", cancelled_meanwhile)
    world.store.add(lots(2))
    world.rounds()
    assert world.batches.batches == {} and world.batches.files == {}
    assert len(world.batches.deleted) == 1 and world.submitted() == []
    assert set(world.store.statuses().values()) == {"cancelled"}


def test_a_cancelled_jobs_billed_lot_is_reported_at_once_though_the_stage_is_paused(world: World) -> None:
    # A pause (the key refused, the quota out) holds every batch, but dropping a cancelled job's
    # lots makes none: held with the rest, what they were billed stayed out of the job's usage
    # for the whole pause.
    paid = Usage(input_tokens=4000, output_tokens=12_000, model="gpt-test")
    [lot] = lots(1)
    world.store.add([replace(lot, work=lot.work.model_copy(update={"earlier_usage": paid}))])
    world.store.add(lots(1, job_id="job-2"))
    world.store.cancelled.add("job-1")
    world.stage.unreadable[KEY_REFUSED] = "sending: invalid_api_key"
    world.rounds(2)
    [failed] = world.of(LotFailed)
    assert (failed.lot_id, failed.usage) == ("job-1-lot-0", paid)
    assert world.store.statuses() == {"job-1-lot-0": "cancelled", "job-2-lot-0": "waiting"}
    assert world.batches.files == {} and world.batches.batches == {}


def test_a_cancelled_job_whose_drop_fails_leaves_the_other_jobs_batches_collected(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dropping a cancelled job's lots (its claim, its LotFailed) failed the whole round, on every
    # instance and at every tick: no other job's batch was sent or collected until it succeeded.
    world.batches.finish = None  # job-2's batch runs on
    world.store.add(lots(1, job_id="job-2"))
    world.rounds()
    paid = Usage(input_tokens=4000, output_tokens=12_000, model="gpt-test")
    [lot] = lots(1)
    world.store.add([replace(lot, work=lot.work.model_copy(update={"earlier_usage": paid}))])
    world.store.cancelled.add("job-1")
    publish = world.publisher.publish

    def refused_for_job_1(client_id: str, events: Sequence[Caused]) -> None:
        if any(event.job_id == "job-1" for _, event in events):
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))
        publish(client_id, events)

    monkeypatch.setattr(world.publisher, "publish", refused_for_job_1)
    world.batches.finish = "completed"
    world.rounds()
    assert world.completed() == ["job-2-lot-0"] and world.failed() == {}
    monkeypatch.setattr(world.publisher, "publish", publish)  # Kafka takes job-1's events again
    world.rounds()
    [failed] = world.of(LotFailed)
    assert (failed.lot_id, failed.usage) == ("job-1-lot-0", paid)
    assert world.store.statuses() == {"job-2-lot-0": "done", "job-1-lot-0": "cancelled"}


def test_a_database_outage_ends_the_round_once_not_once_per_cancelled_job(
        world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Each cancelled job's drop was tried and logged with its traceback on its own: a PostgreSQL
    # outage wrote one traceback per cancelled job at every tick, for the whole outage.
    for job_id in ("job-1", "job-2", "job-3"):
        world.store.add(lots(1, job_id=job_id))
        world.store.cancelled.add(job_id)

    def database_down(*_: object) -> None:
        raise OperationalError("SELECT", {}, psycopg2.OperationalError("connection refused"))

    monkeypatch.setattr(world.store, "claim", database_down)
    with pytest.raises(OperationalError):
        world.rounds()
    assert [record for record in caplog.records if "cancelled job" in record.getMessage()] == []


def test_a_statement_timeout_in_one_cancelled_jobs_drop_leaves_the_other_jobs_batches_sent(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # A statement the server ended (its timeout, a lock's) is that job's alone: taken for an
    # outage, it ended every round before any other job's batch was sent or collected.
    world.store.add(lots(1, job_id="job-2"))
    world.store.add(lots(1))
    world.store.cancelled.add("job-1")
    claim = world.store.claim

    def timed_out_for_job_1(job_id: str, *args: Any) -> Any:
        if job_id == "job-1":
            raise OperationalError("SELECT", {}, psycopg2.errors.QueryCanceled("statement timeout"))
        return claim(job_id, *args)

    monkeypatch.setattr(world.store, "claim", timed_out_for_job_1)
    world.rounds()
    assert world.completed() == ["job-2-lot-0"]
