"""The stage's gauges while its rounds fail, on PostgreSQL: what the dashboard and the alerts on
them (LotLensOpenAIBatchOverAge, the lots waiting) read is what the tables hold, not the figure
of the last round that succeeded, and lots claimed into a shard whose batch is not made wait too."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select, text

from lotlens_common.model.errors import ERROR_KINDS
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.runner import run_stage_loop
from lotlens_common.stage.service import postgres_stage
from lotlens_common.tables import stage_shards
from tests.conftest import new_id
from tests.integration.stage.helpers import STAGE, submit_lots, vision_spec
from tests.polling import wait_for
from tests.standin import Standin

pytestmark = pytest.mark.integration

# A release whose shard writes the database refuses (a missing migration, a revoked grant, a
# defect): the stage's intake still takes lots in, and every round fails on its first shard.
_REFUSE_SHARDS = """
CREATE FUNCTION refuse_shards() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'shards refused by this test'; END $$;
CREATE TRIGGER refuse_shards BEFORE INSERT ON stage_shards FOR EACH ROW EXECUTE FUNCTION refuse_shards();
"""


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"stage": "vision", **labels}) or 0.0


def test_the_lots_waiting_gauge_follows_the_table_while_every_round_fails(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Set only after a round that succeeded, the gauges kept the last good figure for as long as
    # the rounds failed: lots piled up while the dashboard (and any alert on it) read 0.
    with engine.begin() as conn:
        conn.execute(text(_REFUSE_SHARDS))
    submit_lots(engine, new_id("job-"), ["Camry", "Corolla", "Civic"])  # the intake still works
    failures_before = _sample("lotlens_stage_round_failures_total", step="loop")
    # Two failed rounds: the first round's whole pass is over. Read while the loop runs (its
    # figures leave /metrics with it).
    run_stage_until(settings, engine, standin, "two failed rounds, 3 lots waiting", lambda: _sample(
        "lotlens_stage_round_failures_total", step="loop") >= failures_before + 2
        and _sample("lotlens_stage_lots_waiting") == 3.0)


def run_stage_until(settings: ServiceSettings, engine: Engine, standin: Standin, what: str,
                    done: Callable[[], bool]) -> None:
    """Run the vision stage's loop on its own thread until `done`, then stop it."""
    stage = postgres_stage(engine, EventProducer(settings.kafka, "test"),
                           OpenAIBatches(make_openai_client("test", standin.base_url, 10)),
                           vision_spec(settings), STAGE)
    stop = threading.Event()
    loop = threading.Thread(target=run_stage_loop, args=(stage, stop))
    loop.start()
    try:
        wait_for(done, what, timeout_s=60)
    finally:
        stop.set()
        loop.join(30)


def _failed_uploads() -> float:
    return sum(_sample("lotlens_openai_errors_total", operation="files", kind=kind) for kind in ERROR_KINDS)


def test_lots_claimed_into_a_shard_whose_upload_fails_are_counted_waiting(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # A stage whose uploads fail claims its lots into a `building` shard and tries it again every
    # round: out of the queue and in no batch, the lots were counted nowhere, and the dashboard
    # read 0 waiting for the vision stage while all of them waited.
    standin.faults(api_faults=[{"scope": "files", "method": "POST", "kind": "server_error", "count": 1000}])
    submit_lots(engine, new_id("job-"), ["Camry", "Corolla", "Civic"])
    failed_before = _failed_uploads()
    waiting: list[float] = []

    def retried() -> bool:
        """The second failed upload is the shard's retry: the round that claimed it is over."""
        waiting.append(_sample("lotlens_stage_lots_waiting"))  # while the loop runs
        return _failed_uploads() >= failed_before + 2

    run_stage_until(settings, engine, standin, "two failed uploads", retried)
    with engine.connect() as conn:
        shards = conn.execute(select(stage_shards.c.status, stage_shards.c.lot_count)).all()
    assert shards == [("building", 3)], shards
    assert waiting[-1] == 3.0, waiting
