"""Webhook bodies: the contract's shape, UTF-8 kept, splitting into complete numbered parts."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from lotlens_common.read_models import JobView, duration_words
from lotlens_webhook_dispatcher.payloads import body, head, part_body, plan_parts


def _job(**changes: object) -> JobView:
    fields: dict[str, object] = dict(
        job_id="550e8400-e29b-41d4-a716-446655440000", client_id="acme", status="completed",
        api_version="2.0", languages=["en", "fr"], total_lots=2, processed_lots=2, failed_lots=0,
        images_processed=4, webhook_configured=True, error_message=None,
        created_at=datetime(2025, 8, 5, 7, 30, tzinfo=UTC),
        updated_at=datetime(2025, 8, 5, 8, 15, tzinfo=UTC),
        estimated_completion=None, completed_at=datetime(2025, 8, 5, 8, 15, tzinfo=UTC), cancelled_at=None)
    fields.update(changes)
    return JobView(**fields)  # type: ignore[arg-type]


def _lot(n: int, text_bytes: int = 40) -> dict[str, object]:
    return {"lot_id": f"lot-{n}", "status": "completed", "processed_at": "2025-08-05T08:10:00Z",
            "processed_images": 2,
            "descriptions": [{"language": "en", "damages": "<p>" + "x" * text_bytes + "</p>"},
                             {"language": "fr", "damages": "<p>Évaluation complète des dommages</p>"}],
            "missing_images": []}


def test_body_has_the_contracts_fields_in_order():
    doc = orjson.loads(body(head(_job()), [_lot(1)]))
    assert list(doc) == ["event", "job_id", "status", "completed_at", "processing_summary", "lots"]
    assert doc["event"] == "batch_job_completed"
    assert doc["completed_at"] == "2025-08-05T08:15:00Z"
    assert doc["processing_summary"] == {"total_lots": 2, "processed_lots": 2, "failed_lots": 0,
                                         "total_images_processed": 4, "total_processing_time": "45 minutes"}
    assert doc["lots"] == [_lot(1)]


def test_non_ascii_travels_as_utf8_and_survives_a_decode_encode_round_trip():
    raw = body(head(_job()), [_lot(1)])
    assert "Évaluation complète".encode() in raw
    assert b"\\u" not in raw
    assert raw.decode("utf-8").encode() == raw


def _part_counts(job_head: dict[str, object], lots: list[tuple[str, dict[str, object]]],
                 limit: int) -> dict[str, int]:
    return {url: len(plans) for url, plans in plan_parts(job_head, lots, limit).items()}


def test_a_small_delivery_is_one_part_without_part_numbers():
    lots = [_lot(n) for n in range(3)]
    [plan] = plan_parts(head(_job()), [("https://a/", lot) for lot in lots], 5_000_000)["https://a/"]
    doc = orjson.loads(part_body(head(_job()), lambda: lots, 1, 1, 5_000_000, plan))
    assert "part" not in doc and "total_parts" not in doc
    assert doc["lots"] == lots


def test_a_large_delivery_splits_into_complete_numbered_parts_within_the_limit():
    job_head, limit = head(_job()), 1200
    lots = [_lot(n, text_bytes=200) for n in range(12)]
    plans = plan_parts(job_head, [("https://a/", lot) for lot in lots], limit)["https://a/"]
    total = len(plans)
    assert total > 2
    parts = [part_body(job_head, lambda: lots, part, total, limit, plan)
             for part, plan in enumerate(plans, start=1)]
    docs = [orjson.loads(raw) for raw in parts]
    assert all(len(raw) <= limit for raw in parts)
    assert [(d["part"], d["total_parts"]) for d in docs] == [(p, total) for p in range(1, total + 1)]
    assert [lot for d in docs for lot in d["lots"]] == lots
    assert all(d["job_id"] == job_head["job_id"] and d["processing_summary"] for d in docs)


def test_a_lot_larger_than_the_limit_travels_alone():
    job_head = head(_job())
    lots = [_lot(0), _lot(1, text_bytes=5000), _lot(2)]
    plans = plan_parts(job_head, [("u", lot) for lot in lots], 1500)["u"]
    assert len(plans) == 3
    assert orjson.loads(part_body(job_head, lambda: lots, 2, 3, 1500, plans[1]))["lots"] == [lots[1]]


def test_parts_are_counted_per_url_from_one_pass_over_the_jobs_lots():
    lots = [("https://a/", _lot(n, 200)) for n in range(6)] + [("https://b/", _lot(9))]
    assert _part_counts(head(_job()), lots, 1300) == {"https://a/": 3, "https://b/": 1}


def test_a_delivery_scheduled_without_a_plan_whose_limit_changed_still_carries_every_lot_once():
    # Scheduled by the release before plans (rolling upgrade): parts counted, lots chosen now.
    job_head = head(_job())
    lots = [_lot(n, text_bytes=200) for n in range(7)]
    bodies = [orjson.loads(part_body(job_head, lambda: lots, part, 3, 5_000_000)) for part in (1, 2, 3)]
    assert [d["part"] for d in bodies] == [1, 2, 3]
    assert [lot for d in bodies for lot in d["lots"]] == lots


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "0 seconds"), (1, "1 second"), (59, "59 seconds"), (60, "1 minute"), (119, "1 minute"),
    (2700, "45 minutes"), (3600, "1 hour"), (3660, "1 hour 1 minute"), (7320, "2 hours 2 minutes"),
    (86_400, "24 hours")])
def test_processing_time_is_singular_for_one_and_plural_otherwise(seconds: int, words: str) -> None:
    assert duration_words(seconds) == words


def test_a_cancelled_jobs_body_says_when_it_ended_as_its_results_do():
    """`completed_at` was null for a cancelled job (its results said the cancel's time): a receiver
    parsing it as the contract shows (a string) failed, and the delivery was retried to failure."""
    cancelled = datetime(2025, 8, 5, 7, 50, 0, 123456, tzinfo=UTC)
    doc = orjson.loads(body(head(_job(status="cancelled", completed_at=None, cancelled_at=cancelled)), []))
    assert doc["completed_at"] == "2025-08-05T07:50:00Z"


@pytest.mark.parametrize("microsecond", [0, 123456])
def test_timestamps_are_written_as_the_contract_shows_them(microsecond: int):
    """`2025-08-05T08:30:15Z`: with microseconds most values did not parse with the contract's
    pattern, and the ones on a whole second did not parse with the other."""
    finished = datetime(2025, 8, 5, 8, 15, 0, microsecond, tzinfo=UTC)
    doc = orjson.loads(body(head(_job(completed_at=finished)), []))
    assert datetime.strptime(doc["completed_at"], "%Y-%m-%dT%H:%M:%SZ") == finished.replace(
        microsecond=0, tzinfo=None)
