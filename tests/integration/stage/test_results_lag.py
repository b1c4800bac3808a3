"""A batch that reads `completed` before its output can be read, on PostgreSQL, Kafka and the
stand-in: its answered lots are waited for, never sent (and paid) again."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.events import LotFailed
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.runner import step
from tests.conftest import new_id
from tests.integration.stage.helpers import completed_lots, job_events, open_lots, runtime, submit_lots
from tests.standin import Standin


def sent_custom_ids(standin: Standin) -> Counter[str]:
    """How often each custom_id was sent to OpenAI, over every batch the stand-in ran."""
    headers = {"Authorization": f"Bearer {standin.api_key}"} if standin.api_key else {}
    batches = standin.control.get("/v1/batches", params={"limit": 100}, headers=headers).json()["data"]
    return Counter(custom_id for batch in batches for custom_id in standin.control.get(
        f"/_standin/batches/{batch['id']}/requests").json()["custom_ids"])


def run_until_settled(settings: ServiceSettings, engine: Engine, standin: Standin, job_id: str) -> None:
    async def scenario() -> None:
        async with runtime(settings, engine, standin) as stage:
            for _ in range(200):
                await step(stage, watching=True)
                if not open_lots(engine, "vision", job_id):
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"lots still open: {open_lots(engine, 'vision', job_id)}")

    asyncio.run(scenario())


@pytest.mark.parametrize("fault", [{"output_lag_reads": 3}, {"content_not_found_next": 1}],
                         ids=["output_file_id_null_for_a_moment", "output_content_404_once"])
def test_a_completed_batch_whose_output_lags_is_waited_for_not_sent_again(
        settings: ServiceSettings, engine: Engine, standin: Standin, fault: dict[str, Any]) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a", "b", "c"])
    standin.faults(**fault)
    run_until_settled(settings, engine, standin, job_id)

    sent = sent_custom_ids(standin)
    assert sorted(sent.values()) == [1, 1, 1], sent  # each lot paid for once
    assert standin.stats()["batches_created"] == 1
    events = job_events(settings, settings.topics.vision, job_id, 3)
    assert completed_lots(events) == ["lot-0", "lot-1", "lot-2"]
    assert not [e for e in events if isinstance(e.event, LotFailed)]
