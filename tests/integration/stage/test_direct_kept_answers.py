"""Direct mode's answers wait for their collection however long it takes, on PostgreSQL, Kafka and
the stand-in's Responses endpoint: a batch collected more than an hour after it was made (the
stage could not collect meanwhile: Kafka down, say) is read, not sent to the model again."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.model.openai_client import call_responses, make_openai_client
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import direct
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import postgres_stage
from lotlens_common.stage.submit import flush_due
from tests.conftest import new_id
from tests.integration.stage.helpers import STAGE, lot_statuses, open_lots, submit_lots, vision_spec
from tests.standin import Standin

pytestmark = pytest.mark.integration


class _Clock:
    """The `time` direct mode reads: the real one, `ahead_s` later."""

    ahead_s = 0.0

    @classmethod
    def time(cls) -> float:
        return time.time() + cls.ahead_s


def _model_calls(standin: Standin) -> int:
    return sum(standin.stats()["direct_calls"].values())


def test_direct_answers_collected_over_an_hour_late_are_read_not_sent_again(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The next batch made after the hour deleted the first one's answers, uncollected: its lots
    # were sent to the model again (paid twice) as a lost batch's, and a lot at its last attempt
    # failed for good although its answer had come.
    monkeypatch.setattr(direct, "time", _Clock)
    job_1, job_2 = new_id("job-"), new_id("job-")
    submit_lots(engine, job_1, ["Camry, front collision", "Civic, hail"])
    folder = tmp_path / "work"
    folder.mkdir()

    async def scenario() -> None:
        client = make_openai_client("test", standin.base_url, 10)
        async with client:
            batches = DirectBatches(partial(call_responses, client), 4, folder)
            rt: Any = postgres_stage(engine, EventProducer(settings.kafka, "test"), batches,
                                     vision_spec(settings), STAGE.direct_mode())
            assert len(await flush_due(rt)) == 1  # job-1 sent and answered; not collected yet
            _Clock.ahead_s = direct.KEPT_S + 60
            submit_lots(engine, job_2, ["F-150, rollover"])
            for _ in range(20):
                await step(rt, watching=True)
                if not open_lots(engine, "vision", job_1) + open_lots(engine, "vision", job_2):
                    return
                await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert lot_statuses(engine, "vision", job_1) == {"lot-0": store.DONE, "lot-1": store.DONE}
    assert lot_statuses(engine, "vision", job_2) == {"lot-0": store.DONE}
    assert _model_calls(standin) == 3, "a lot was sent to the model again"
    assert sorted(path.name for path in folder.iterdir()) == [], "answers left behind after collection"
