"""The result-store's projections, driven through its batch handler with envelopes (fast):
statuses, counts, idempotency, ordering and completion (webhook records: test_projection_webhooks.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, insert, select, text, update

from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    JobCancelled,
    JobCompleted,
    LotFailed,
    TranslationCompleted,
    VisionCompleted,
)
from lotlens_common.model.usage import Usage
from lotlens_common.producer import EventProducer
from lotlens_common.row_sets import json_rows
from lotlens_common.settings import TopicSettings
from lotlens_common.tables import (
    jobs,
    lots,
    openai_batches,
)
from lotlens_result_store import sql
from lotlens_result_store.completion import publish_completions
from lotlens_result_store.handlers import apply_batch
from tests.conftest import Infra, new_id, own_schema, rows_read
from tests.integration.result_store.support import (
    IMAGES_PER_LOT,
    LANGUAGES,
    Apply,
    assert_job_finished,
    completions,
    count,
    job_published,
    job_row,
    job_script,
    lot_rows,
)

pytestmark = pytest.mark.integration


# --- the handler, driven directly ---

def test_a_three_lot_job_is_projected_and_announced_exactly_once(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    apply(script.submissions)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["total_lots"], job["processed_lots"]) == ("pending", 3, 0)
    apply(script.vision)
    # Every lot waits for translation: the job is translating before its translation batch.
    assert job_row(engine, script.job_id)["status"] == "translating"
    assert {lot["status"] for lot in lot_rows(engine, script.job_id).values()} == {"translating"}
    apply(script.translation[:2])
    job = job_row(engine, script.job_id)
    assert (job["status"], job["processed_lots"]) == ("translating", 1)
    apply(script.translation[2:])

    assert_job_finished(engine, script)
    assert count(engine, openai_batches, openai_batches.c.job_id, script.job_id) == 2
    [announced] = completions(infra, topics, script.job_id)
    event = announced.event
    assert isinstance(event, JobCompleted)
    assert (event.status, event.total_lots, event.processed_lots, event.failed_lots) == ("completed", 3, 3, 0)
    assert announced.client_id == script.client_id
    assert event.completed_at == job_row(engine, script.job_id)["completed_at"]


def with_usage(envelopes: list[Envelope], usage: Usage) -> list[Envelope]:
    """The same envelopes, each completion event carrying `usage`."""
    return [Envelope(event=e.event.model_copy(update={"usage": usage}), client_id=e.client_id,
                     occurred_at=e.occurred_at)
            if isinstance(e.event, VisionCompleted | TranslationCompleted) else e for e in envelopes]


def test_usage_is_kept_per_lot_and_stage_and_summed_into_the_job_and_its_event(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3, failed=[1])
    seen = Usage(input_tokens=1000, cached_input_tokens=100, output_tokens=200, reasoning_tokens=64,
                 estimated_cost_usd=0.002, model="o4-mini")
    read = Usage(input_tokens=300, output_tokens=400, estimated_cost_usd=0.001, model="gpt-4.1-mini")
    reasoning = {"model": "o4-mini", "kind": "reasoning"}
    tokens_before = REGISTRY.get_sample_value("lotlens_model_tokens_total", reasoning) or 0
    apply(script.submissions)
    apply(with_usage(script.vision, seen))
    apply(with_usage(script.vision, seen))  # a replay changes nothing
    apply(with_usage(script.translation, read))
    lots_now = lot_rows(engine, script.job_id)
    assert lots_now["lot-00000"]["usage"] == {"vision": seen.model_dump(mode="json"),
                                               "translation": read.model_dump(mode="json")}
    assert lots_now["lot-00001"]["usage"] is None  # failed before any answer

    [announced] = completions(infra, topics, script.job_id)
    assert isinstance(announced.event, JobCompleted)
    usage = announced.event.usage
    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens, usage.reasoning_tokens) == (
        2600, 200, 1200, 128)
    assert usage.estimated_cost_usd == pytest.approx(0.006)
    assert usage.by_model["o4-mini"].input_tokens == 2000
    assert usage.by_model["gpt-4.1-mini"].output_tokens == 800
    assert job_row(engine, script.job_id)["usage"] == usage.model_dump(mode="json")
    assert REGISTRY.get_sample_value("lotlens_model_tokens_total", reasoning) == tokens_before + 128


def test_projected_events_are_counted_by_type(apply: Apply) -> None:
    script = job_script(4)

    def counted(event_type: str) -> float:
        return REGISTRY.get_sample_value("lotlens_events_projected_total", {"type": event_type}) or 0

    def pending_jobs() -> float:
        return REGISTRY.get_sample_value("batch_jobs_total", {"status": "pending"}) or 0

    lots_before, jobs_before = counted("LotSubmitted"), counted("JobSubmitted")
    pending_before = pending_jobs()
    apply(script.submissions + script.submissions[1:3])
    assert counted("LotSubmitted") == lots_before + 6  # a redelivered event is applied again
    assert counted("JobSubmitted") == jobs_before + 1
    assert pending_jobs() == pending_before + 1


def test_a_lot_settled_before_its_translation_came_back_keeps_what_the_answer_used(
        engine: Engine, apply: Apply) -> None:
    # The usage is written by the statement that stores the lot's result; one whose lot is
    # already settled is still recorded (it was paid for), once, however often it is replayed.
    script = job_script(2)
    seen = Usage(input_tokens=1000, output_tokens=200, estimated_cost_usd=0.002, model="o4-mini")
    read = Usage(input_tokens=300, output_tokens=400, estimated_cost_usd=0.001, model="gpt-4.1-mini")
    both = {"vision": seen.model_dump(mode="json"), "translation": read.model_dump(mode="json")}
    late, on_time = script.lot_ids
    apply(with_usage(script.vision, seen))  # before its submissions: the lots are made by it
    apply(script.submissions)
    apply([Envelope(event=LotFailed(job_id=script.job_id, lot_id=late, stage="translation", total_lots=2,
                                    reason="the translation failed"), client_id=script.client_id)])
    for _ in range(2):
        apply(with_usage(script.translation, read))
        rows = lot_rows(engine, script.job_id)
        assert (rows[late]["status"], rows[late]["usage"]) == ("failed", both)
        assert (rows[on_time]["status"], rows[on_time]["usage"]) == ("completed", both)
    job = job_row(engine, script.job_id)
    assert (job["processed_lots"], job["failed_lots"]) == (1, 1)
    assert job["usage"]["input_tokens"] == 2 * (1000 + 300)


def test_the_gateways_pending_row_is_completed_by_job_submitted(engine: Engine, apply: Apply) -> None:
    script = job_script(2)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=script.job_id, client_id=script.client_id, status="pending",
                                         total_lots=2, languages=list(LANGUAGES)))
    apply(script.submissions)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["api_version"], job["webhook_configured"]) == ("pending", "2.0", True)
    assert job["estimated_completion"] is not None


def test_a_retry_jobs_link_to_the_job_it_retries_is_projected(engine: Engine, apply: Apply) -> None:
    script = job_script(2)
    submitted = script.submissions[0]
    linked = submitted.event.model_copy(update={"retry_of": "the-earlier-job"})
    apply([Envelope(event=linked, client_id=script.client_id, occurred_at=submitted.occurred_at),
           *script.submissions[1:]])
    assert job_row(engine, script.job_id)["retry_of"] == "the-earlier-job"


def test_duplicated_and_out_of_order_events_give_the_same_state(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(4, failed=[2])
    # The translation topic first, then vision, then submissions; every event twice, sometimes in
    # the same batch and sometimes in another one.
    backwards = script.translation + script.vision + script.submissions
    apply(backwards + backwards[:5])
    for i in range(0, len(backwards), 3):
        apply(backwards[i:i + 3])
    assert_job_finished(engine, script)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_job_is_not_announced_before_its_lot_submissions_are_projected(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    apply(script.translation + script.vision)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["total_lots"], job["processed_lots"]) == ("translating", 3, 3)
    apply(script.submissions[:3])
    assert job_row(engine, script.job_id)["status"] == "translating"
    apply(script.submissions[3:])
    assert_job_finished(engine, script)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_job_waits_for_the_vision_results_of_lots_translated_first(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    apply(script.submissions)
    apply(script.translation)
    job = job_row(engine, script.job_id)
    assert (job["status"], job["processed_lots"], job["images_processed"]) == ("translating", 3, 0)
    apply(script.vision[:2])
    job = job_row(engine, script.job_id)
    assert (job["status"], job["images_processed"]) == ("translating", IMAGES_PER_LOT - 1)
    apply(script.vision)
    apply(script.vision)
    assert_job_finished(engine, script)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_failed_lot_is_counted_and_keeps_its_reason(engine: Engine, apply: Apply) -> None:
    script = job_script(3, failed=[1])
    apply(script.all_events())
    apply(script.vision)  # the failure again: still counted once
    assert_job_finished(engine, script)
    assert job_row(engine, script.job_id)["error_message"] is None


def test_a_job_whose_every_lot_failed_fails(engine: Engine, apply: Apply, infra: Infra,
                                            topics: TopicSettings) -> None:
    script = job_script(3, failed=[0, 1, 2])
    apply(script.all_events())
    assert_job_finished(engine, script)
    job = job_row(engine, script.job_id)
    assert job["error_message"] == "all 3 lots failed"
    [announced] = completions(infra, topics, script.job_id)
    assert isinstance(announced.event, JobCompleted) and announced.event.status == "failed"


def test_a_cancelled_job_stays_cancelled_and_is_announced_once(
        engine: Engine, apply: Apply, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(3)
    cancelled_at = datetime(2026, 3, 1, 0, 5, tzinfo=UTC)
    cancel = Envelope(client_id=script.client_id,
                      event=JobCancelled(job_id=script.job_id, cancelled_at=cancelled_at))
    apply(script.submissions + script.vision[:2])
    apply([cancel])
    apply(script.vision + script.translation + [cancel])
    job = job_row(engine, script.job_id)
    assert (job["status"], job["cancelled_at"]) == ("cancelled", cancelled_at)
    assert job["processed_lots"] == 3  # the lots already paid for are still shown
    assert lot_statuses(engine, script.job_id) == {"completed"}
    [announced] = completions(infra, topics, script.job_id)
    event = announced.event
    assert isinstance(event, JobCompleted)
    assert (event.status, event.completed_at) == ("cancelled", cancelled_at)


def test_a_cancelled_jobs_unfinished_lots_read_cancelled_for_good(engine: Engine, apply: Apply) -> None:
    script = job_script(3)
    cancel = Envelope(client_id=script.client_id, event=JobCancelled(
        job_id=script.job_id, cancelled_at=datetime(2026, 3, 1, 0, 5, tzinfo=UTC)))
    apply([*script.submissions, cancel])
    assert lot_statuses(engine, script.job_id) == {"cancelled"}
    apply(script.vision)  # a late vision result does not move a cancelled lot on
    assert lot_statuses(engine, script.job_id) == {"cancelled"}
    assert job_row(engine, script.job_id)["status"] == "cancelled"


def lot_statuses(engine: Engine, job_id: str) -> set[str]:
    with engine.connect() as conn:
        return {row[0] for row in conn.execute(select(lots.c.status).where(lots.c.job_id == job_id))}


def test_a_job_status_never_moves_backwards(engine: Engine, apply: Apply) -> None:
    script = job_script(3)
    apply(script.submissions)
    apply(script.translation[:1])
    assert job_row(engine, script.job_id)["status"] == "translating"
    apply(script.vision[:1])
    assert job_row(engine, script.job_id)["status"] == "translating"
    apply(script.submissions[:1])
    assert job_row(engine, script.job_id)["status"] == "translating"


def test_a_terminal_job_left_unannounced_is_announced_by_the_startup_sweep(
        engine: Engine, apply: Apply, producer: EventProducer, infra: Infra, topics: TopicSettings) -> None:
    script = job_script(2)
    apply(script.all_events())
    # As if the process died after Kafka had the announcement, before it was marked published.
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == script.job_id).values(completion_published=False))
    assert publish_completions(engine, producer, topics.completions) >= 1
    assert job_published(engine, script.job_id)
    assert publish_completions(engine, producer, topics.completions, [script.job_id]) == 0
    announced = completions(infra, topics, script.job_id)
    assert len(announced) == 2
    assert announced[0].event == announced[1].event
    # One id: a subscriber deduplicating by event_id sees the job end once.
    assert announced[0].event_id == announced[1].event_id


def test_the_announced_outcome_wins_over_a_cancel_replayed_before_the_last_lot(
        engine: Engine, apply: Apply) -> None:
    # Live, the lots finished first: the job was announced completed and the cancel changed
    # nothing. A replay may read the cancel (submissions topic) before the lots (other topics).
    script = job_script(2)
    cancel = Envelope(client_id=script.client_id, event=JobCancelled(
        job_id=script.job_id, cancelled_at=datetime(2026, 3, 1, 1, tzinfo=UTC)))
    apply([*script.submissions, cancel])
    apply(script.vision + script.translation)
    assert job_row(engine, script.job_id)["status"] == "cancelled"
    finished = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    apply([Envelope(client_id=script.client_id, event=JobCompleted(
        job_id=script.job_id, status="completed", completed_at=finished, total_lots=2, processed_lots=2,
        failed_lots=0))])
    job = job_row(engine, script.job_id)
    assert (job["status"], job["completed_at"], job["cancelled_at"]) == ("completed", finished, None)
    assert (job["processed_lots"], job["error_message"], job["completion_published"]) == (2, None, True)


def test_a_running_jobs_lot_submissions_read_no_other_lot(infra: Infra, engine: Engine) -> None:
    # Each batch of lot submissions looks for lots arriving after their job's cancel. Planned from
    # the statistics of a finished job (all its lots settled), that join read every unsettled lot,
    # each with a scan of `jobs`: 20,000 scans for a 5,000-lot job, 210,000 for a 50,000-lot one.
    script = job_script(1000)
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text("INSERT INTO jobs (job_id, status, total_lots) "
                          "VALUES ('finished', 'completed', 5000)"))
        conn.execute(text("INSERT INTO lots (job_id, lot_id, seq, status) "
                          "SELECT 'finished', 'lot-' || n, n, 'completed' FROM generate_series(1, 5000) n"))
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("ANALYZE lots"))
        apply_batch(conn, script.submissions[:-100])
        read_before = rows_read(conn, "lots")
        apply_batch(conn, script.submissions[-100:])
        read = rows_read(conn, "lots") - read_before
    assert read == 0


def test_vision_results_for_completed_lots_are_counted_without_comparing_every_pair(engine: Engine) -> None:
    # A replay can project a batch's VisionCompleted after its TranslationCompleted. The planner
    # cannot count the rows of a JSON document; when the upsert joined its two CTEs it chose a
    # nested loop, 999,000 comparisons for 1,000 lots (94 ms), where a lookup per lot does.
    job_id, lot_count = new_id("job-"), 1000
    with engine.connect() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": f"lot-{i}", "status": "completed"}
                                    for i in range(lot_count)])
        rows = json_rows({"job_id": job_id, "lot_id": f"lot-{i}", "processed_images": IMAGES_PER_LOT,
                          "missing_images": [], "usage": None} for i in range(lot_count))
        added = conn.execute(sql.UPSERT_DESCRIBED_LOTS, {"rows": rows}).all()
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql.UPSERT_DESCRIBED_LOTS}"),
                            {"rows": rows}).scalar_one()
        conn.rollback()
    assert added == [(job_id, lot_count * IMAGES_PER_LOT)]
    assert _filtered_by_joins(plan[0]["Plan"]) == 0


def _filtered_by_joins(node: dict[str, Any]) -> int:
    return int(node.get("Rows Removed by Join Filter", 0)) + sum(
        _filtered_by_joins(child) for child in node.get("Plans", []))

