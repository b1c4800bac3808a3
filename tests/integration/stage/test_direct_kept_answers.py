"""Direct mode's answers wait for their collection however long it takes, on PostgreSQL, Kafka and
the stand-in's Responses endpoint: a batch collected more than an hour after it was made (the
stage could not collect meanwhile: Kafka down, say), or one Kafka kept off the record, is read
(found by recovery), not sent to the model again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.model.openai_client import call_responses, make_openai_client
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import direct
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.ports import Caused, Stage
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import postgres_stage
from lotlens_common.stage.submit import flush_due
from tests.conftest import new_id
from tests.integration.stage.helpers import STAGE, lot_statuses, open_lots, submit_lots, vision_spec
from tests.standin import Standin

pytestmark = pytest.mark.integration

AN_HOUR_LATER_S = 3600.0 + 60


class _Clock:
    """The `time` direct mode reads: the real one, `ahead_s` later."""

    def __init__(self) -> None:
        self.ahead_s = 0.0

    def time(self) -> float:
        return time.time() + self.ahead_s


class _KafkaDown:
    """The stage's publisher while Kafka acknowledges nothing."""

    def publish(self, client_id: str, events: Sequence[Caused]) -> None:
        raise PublishError("Kafka did not acknowledge")


def _model_calls(standin: Standin) -> int:
    return sum(standin.stats()["direct_calls"].values())


def _direct_stage(settings: ServiceSettings, engine: Engine, client: Any, folder: Path) -> Stage[Any]:
    batches = DirectBatches(partial(call_responses, client), 4, folder)
    return postgres_stage(engine, EventProducer(settings.kafka, "test"), batches, vision_spec(settings),
                          STAGE.direct_mode())


async def _until_settled(rt: Stage[Any], engine: Engine, *job_ids: str) -> None:
    for _ in range(20):
        await step(rt, watching=True)
        if not [lot for job_id in job_ids for lot in open_lots(engine, "vision", job_id)]:
            return
        await asyncio.sleep(0.1)


def _first_job_sent_to(engine: Engine, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> tuple[_Clock, str, str, Path]:
    """Direct mode's clock under the test's hand, a first job of two lots waiting, a second job's
    id, and an empty work folder."""
    clock = _Clock()
    monkeypatch.setattr(direct, "time", clock)
    job_1, job_2 = new_id("job-"), new_id("job-")
    submit_lots(engine, job_1, ["Camry, front collision", "Civic, hail"])
    folder = tmp_path / "work"
    folder.mkdir()
    return clock, job_1, job_2, folder


def test_direct_answers_collected_over_an_hour_late_are_read_not_sent_again(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The next batch made after the hour deleted the first one's answers, uncollected: its lots
    # were sent to the model again (paid twice) as a lost batch's, and a lot at its last attempt
    # failed for good although its answer had come.
    clock, job_1, job_2, folder = _first_job_sent_to(engine, tmp_path, monkeypatch)

    async def scenario() -> None:
        async with make_openai_client("test", standin.base_url, 10) as client:
            rt = _direct_stage(settings, engine, client, folder)
            assert len(await flush_due(rt)) == 1  # job-1 sent and answered; not collected yet
            clock.ahead_s = AN_HOUR_LATER_S
            submit_lots(engine, job_2, ["F-150, rollover"])
            await _until_settled(rt, engine, job_1, job_2)

    asyncio.run(scenario())
    assert lot_statuses(engine, "vision", job_1) == {"lot-0": store.DONE, "lot-1": store.DONE}
    assert lot_statuses(engine, "vision", job_2) == {"lot-0": store.DONE}
    assert _model_calls(standin) == 3, "a lot was sent to the model again"
    assert sorted(path.name for path in folder.iterdir()) == [], "answers left behind after collection"


@pytest.mark.parametrize("later", ["restarted", "an hour later"])
def test_a_direct_batch_kafka_kept_off_the_record_is_found_by_recovery_not_sent_again(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, later: str) -> None:
    # Only the process's memory could find such a batch, and it forgot it after an hour (at the
    # next batch made) or with a restart: recovery built the shard again, its lots answered twice.
    clock, job_1, job_2, folder = _first_job_sent_to(engine, tmp_path, monkeypatch)

    async def scenario() -> None:
        async with make_openai_client("test", standin.base_url, 10) as client:
            rt = _direct_stage(settings, engine, client, folder)
            kafka, rt.publisher = rt.publisher, _KafkaDown()
            assert await flush_due(rt) == []  # answered, but BatchSubmitted was not acknowledged
            assert [shard.status for shard in rt.store.shards("building")] == ["building"]
            assert _model_calls(standin) == 2
            if later == "restarted":
                rt = _direct_stage(settings, engine, client, folder)  # on the same folder
                made = 1  # a batch made by the new process before its recovery looks
            else:
                rt.publisher, clock.ahead_s = kafka, AN_HOUR_LATER_S
                made = 0  # none until job-1's is on record: recovery's, then job-2's after the hour
            submit_lots(engine, job_2, ["F-150, rollover"])
            assert len(await flush_due(rt)) == made
            await _until_settled(rt, engine, job_1, job_2)

    asyncio.run(scenario())
    assert _model_calls(standin) == 3, "a lot was sent to the model again"
    assert lot_statuses(engine, "vision", job_1) == {"lot-0": store.DONE, "lot-1": store.DONE}
    assert lot_statuses(engine, "vision", job_2) == {"lot-0": store.DONE}
    assert sorted(path.name for path in folder.iterdir()) == [], "answers left behind after collection"
