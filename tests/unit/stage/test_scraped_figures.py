"""What a replica's /metrics says of its stage is the store's at scrape time, not its last round's:
a replica busy in a long round (collecting or building a big file for minutes, its heartbeat
beating) exported the refusals in a row and the lots waiting it had read before, after another
replica's admitted batch had ended the series, and LotLensOpenAIQueueHeld paged on a hold that had
ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from lotlens_common.model.errors import ModelRequestError
from lotlens_common.producer import PublishError
from lotlens_common.stage.core.lifecycle import RUNNING
from lotlens_common.stage.core.queue_hold import HeldNow
from lotlens_common.stage.figures import StageFigures, StageFiguresCollector
from lotlens_common.stage.ports import Caused
from tests.unit.stage.conftest import World, lots, scraped
from tests.unit.stage.test_quota_pause import quota_refusal


def test_a_replica_busy_in_a_long_round_exports_no_series_another_replica_ended(world: World) -> None:
    world.store.add(lots(2))
    world.store.note_queue_refused(time.time() - 5)  # another replica collected a refusal
    world.rounds()  # this replica's submit step reads the row: held, 1 refusal in a row
    assert scraped("lotlens_stage_queue_refusals_in_a_row") == 1
    # This replica now collects a big batch for minutes; meanwhile another one's batch, created
    # after the hold ran out, is admitted: the series ends on the row.
    world.store.queue_hold.until = 0.0
    world.store.note_queue_admitted(time.time() + 5)
    assert world.store.queue_held().refusals == 0
    assert scraped("lotlens_stage_queue_refusals_in_a_row") == 0


def test_a_quota_pause_another_replica_ended_is_not_exported_by_one_busy_in_a_long_round(
        world: World) -> None:
    world.store.add(lots(2))
    world.batches.errors["create"] = [quota_refusal()]
    world.rounds()  # this replica's create is refused: the stage pauses, on the shard's row
    assert scraped("lotlens_stage_paused") == 1
    # This replica now builds a big file for minutes; another one's try is created meanwhile,
    # which ends the pause on the rows: LotLensOpenAIAuthenticationErrors (no `for:`) paged on.
    world.store.end_quota_pause()
    assert scraped("lotlens_stage_paused") == 0


def test_a_key_refused_to_this_replica_is_exported_by_it_though_no_row_holds_the_pause(world: World) -> None:
    # The key is the process's own (a pod left with a revoked Secret): only its calls tell.
    world.batches.errors["create"] = [ModelRequestError("invalid_api_key", 401)]
    world.store.add(lots(2))
    world.rounds()
    assert not world.store.figures().paused
    assert scraped("lotlens_stage_paused") == 1
    world.rounds(2)  # recovery creates the shard's batch with the key: the pause ends
    assert len(world.completed()) == 2 and scraped("lotlens_stage_paused") == 0


def test_a_batch_another_replica_collected_is_no_longer_exported_as_running(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()  # created and watched: validating
    assert scraped("lotlens_openai_batches", status="validating") == 1
    [shard] = world.store.shards("submitted")
    world.store.close_shard(shard.shard_id, "collected", "completed")  # by another replica
    assert scraped("lotlens_openai_batches", status="validating") == 0


def test_the_lots_waiting_are_the_store_s_at_scrape_time(world: World) -> None:
    world.rounds()
    world.store.add(lots(3, job_id="job-late"))  # taken in while this replica's round goes on
    assert scraped("lotlens_stage_lots_waiting") == 3


class _Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _exported(collector: StageFiguresCollector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {sample.name: sample.value for metric in registry.collect() for sample in metric.samples}


HELD = StageFigures(tokens_enqueued=9_000, oldest_batch_age_s=0.0, held=HeldNow(60.0, 2),
                    batches={"in_progress": 1}, paused=False)
DOWN = OperationalError("SELECT", {}, Exception("connection refused"))
CUT_SHORT = OperationalError("SELECT", {}, Exception("canceling statement due to statement timeout"))
T = TypeVar("T")


def _answering(*answers: T | Exception) -> Callable[[], T]:
    """A reading that gives these answers in turn (an exception is raised), the last one ever after."""
    left = list(answers)

    def read() -> T:
        answer = left.pop(0) if len(left) > 1 else left[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return read


def test_the_held_seconds_count_down_between_two_readings() -> None:
    clock = _Clock()
    collector = StageFiguresCollector(clock=clock)
    collector.watch("vision", lambda: HELD, lambda: 500, fresh_s=5)
    assert _exported(collector)["lotlens_stage_queue_held_seconds"] == 60
    clock.now = 4.0  # within the reading's freshness: not read again
    exported = _exported(collector)
    assert exported["lotlens_stage_queue_held_seconds"] == 56
    assert exported["lotlens_stage_queue_refusals_in_a_row"] == 2
    assert exported["lotlens_openai_oldest_batch_age_seconds"] == 0  # no batch: none ages


def test_every_running_status_is_exported_0_when_no_batch_is_in_it() -> None:
    collector = StageFiguresCollector()
    collector.watch("vision", lambda: HELD, lambda: 500, fresh_s=5)
    registry = CollectorRegistry()
    registry.register(collector)
    assert {status: registry.get_sample_value("lotlens_openai_batches", {"stage": "vision", "status": status})
            for status in RUNNING} == {"validating": 0, "in_progress": 1, "finalizing": 0, "cancelling": 0}


def test_a_failed_reading_leaves_the_last_good_figures_aging_until_stale() -> None:
    """One failed reading must not drop the series for a scrape: Prometheus marks it stale at once,
    and LotLensOpenAIQueueHeld's 30 minutes began again. Failing for `stale_s`, they are left out."""
    clock = _Clock()
    collector = StageFiguresCollector(stale_s=60, clock=clock)
    collector.watch("vision", _answering(HELD, DOWN), _answering(500, DOWN), fresh_s=5)
    assert _exported(collector)["lotlens_stage_queue_refusals_in_a_row"] == 2
    clock.now = 6.0  # due: this reading fails, the last good one stands, aged
    exported = _exported(collector)
    assert exported["lotlens_stage_queue_refusals_in_a_row"] == 2
    assert exported["lotlens_stage_queue_held_seconds"] == 54
    assert exported["lotlens_stage_lots_waiting"] == 500
    clock.now = 61.0  # still failing, and the last good reading is over a minute old
    assert _exported(collector) == {}


def test_a_store_that_never_answered_gives_no_figures() -> None:
    collector = StageFiguresCollector()
    collector.watch("vision", _answering(DOWN), _answering(DOWN), fresh_s=0)
    assert _exported(collector) == {}


def test_a_store_that_does_not_answer_holds_no_scrape_and_its_last_figures_go_stale() -> None:
    clock = _Clock()
    answered = threading.Event()

    def hanging(first: T) -> Callable[[], T]:
        readings = [first]

        def read() -> T:
            if not readings:
                answered.wait(10)  # the database does not answer
                return first
            return readings.pop()

        return read

    # Room for the first readings on a loaded machine: 50 ms for both was not always enough.
    collector = StageFiguresCollector(wait_s=0.5, stale_s=10, clock=clock)
    collector.watch("vision", hanging(HELD), hanging(500), fresh_s=5)
    assert "lotlens_stage_lots_waiting" in _exported(collector)
    clock.now = 6.0  # due again: both readings hang, the last ones stand while recent
    began = time.monotonic()
    assert _exported(collector)["lotlens_stage_lots_waiting"] == 500
    # One wait for the scrape, not one per reading (that took 1.0 s).
    assert time.monotonic() - began < 0.9
    clock.now = 11.0
    assert _exported(collector) == {}
    answered.set()


def test_the_pause_and_the_batches_outlive_a_count_of_the_lots_waiting_that_keeps_timing_out() -> None:
    """The quota out for hours: every job's lots pile up waiting, and counting them passes the
    statement timeout. Read in the same statement as the count, the pause went stale with it after
    a minute, and LotLensOpenAIAuthenticationErrors resolved while the stage submitted nothing."""
    clock = _Clock()
    collector = StageFiguresCollector(stale_s=60, clock=clock)
    collector.watch("vision", lambda: HELD._replace(paused=True), _answering(2_000_000, CUT_SHORT), fresh_s=5)
    assert _exported(collector)["lotlens_stage_lots_waiting"] == 2_000_000
    clock.now = 61.0  # every count since was cut short
    exported = _exported(collector)
    assert "lotlens_stage_lots_waiting" not in exported  # no count rather than a stale one
    assert exported["lotlens_stage_paused"] == 1
    assert exported["lotlens_stage_queue_held_seconds"] == 60  # read again at 61 s
    registry = CollectorRegistry()
    registry.register(collector)
    in_progress = {"stage": "vision", "status": "in_progress"}
    assert registry.get_sample_value("lotlens_openai_batches", in_progress) == 1


def test_a_key_refused_here_stays_exported_while_no_reading_of_the_rows_succeeds() -> None:
    """PostgreSQL down for over a minute: the rows' figures go stale and are left out, but the key
    pause is in this process's memory: left out with them, LotLensOpenAIAuthenticationErrors (no
    `for:`) resolved for a revoked key, then paged again once the database was back."""
    clock = _Clock()
    refused = [True]
    collector = StageFiguresCollector(stale_s=60, clock=clock)
    collector.watch("vision", _answering(HELD, DOWN), _answering(500, DOWN), fresh_s=5,
                    paused_here=lambda: refused[0])
    assert _exported(collector)["lotlens_stage_paused"] == 1
    clock.now = 61.0  # the database has not answered for a minute
    assert _exported(collector) == {"lotlens_stage_paused": 1}  # the rows' figures are stale
    refused[0] = False  # the key accepted again: no row read, so nothing to say of the stage
    assert _exported(collector) == {}


def test_a_refused_kafka_record_does_not_pause_the_stage(world: World) -> None:
    """The outage hold (`Stage.held_shard`, `record.py`) is no matter of OpenAI's key: the stage's rounds
    failing count it (LotLensStageRoundsFailing), not LotLensOpenAIAuthenticationErrors."""

    def refused(client_id: str, events: Sequence[Caused]) -> None:
        raise PublishError("1 unacknowledged, 0 failed: [] (Kafka does not answer)")

    world.publisher.publish = refused  # type: ignore[method-assign]
    world.store.add(lots(2))
    world.rounds(2)
    assert world.stage.held_shard is not None  # the stage holds its new batches back
    assert scraped("lotlens_stage_paused") == 0
