"""A cancelled job's lots keep completing after its webhook is planned: its parts stay the parts
that were planned, every lot in exactly one, none over the limit."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import orjson

from lotlens_common.read_models import JobView
from lotlens_webhook_dispatcher.payloads import Lot, PartPlan, head, part_body, plan_parts

URL, LIMIT = "https://hooks.example/lots", 2000


def _job_head(status: str = "cancelled") -> dict[str, object]:
    ended = datetime(2025, 8, 5, 8, 15, tzinfo=UTC)
    return head(JobView(
        job_id="550e8400-e29b-41d4-a716-446655440000", client_id="acme", status=status,
        api_version="2.0", languages=["en"], total_lots=20, processed_lots=6, failed_lots=0,
        images_processed=12, webhook_configured=True, error_message=None,
        created_at=datetime(2025, 8, 5, 7, 30, tzinfo=UTC), updated_at=ended,
        estimated_completion=None, completed_at=None if status == "cancelled" else ended,
        cancelled_at=ended if status == "cancelled" else None))


def _lot(n: int | str, finished: bool, text_bytes: int = 280) -> Lot:
    """A lot as the results show it: completed with its description, or cancelled (in flight)."""
    return {"lot_id": f"lot-{n:03}" if isinstance(n, int) else n,
            "status": "completed" if finished else "cancelled",
            "processed_at": "2025-08-05T08:10:00Z" if finished else None,
            "processed_images": 2 if finished else 0,
            "descriptions": [{"language": "en", "damages": "<p>" + "d" * text_bytes + "</p>"}]
            if finished else [], "missing_images": []}


def _sent(plans: list[PartPlan], reads: list[list[Lot]]) -> list[bytes]:
    """Each planned part's body, part n built from the n-th read of the URL's lots."""
    return [part_body(_job_head(), partial(list, lots), part, len(plans), LIMIT, plan)
            for part, (plan, lots) in enumerate(zip(plans, reads, strict=True), start=1)]


def _lot_ids(bodies: list[bytes]) -> list[str]:
    return [lot["lot_id"] for raw in bodies for lot in orjson.loads(raw)["lots"]]


def test_lots_completing_between_parts_move_no_lot_out_of_its_part_and_no_part_past_the_limit():
    # The reviewer's case: 20 lots, 6 finished when the job was cancelled; part 1 was built from
    # that read, parts 2 and 3 after 8 more in-flight lots had completed.
    at_cancel = [_lot(n, finished=n < 6) for n in range(20)]
    later = [_lot(n, finished=n < 14) for n in range(20)]
    plans = plan_parts(_job_head(), [(URL, lot) for lot in at_cancel], LIMIT)[URL]
    assert len(plans) == 3
    bodies = _sent(plans, [at_cancel, later, later])
    assert _lot_ids(bodies) == [f"lot-{n:03}" for n in range(20)]
    assert [len(raw) for raw in bodies if len(raw) > LIMIT] == []
    # Every part says what it was planned to, whichever read it is built from.
    assert bodies == _sent(plans, [later, at_cancel, at_cancel])


def test_a_lot_written_after_the_plan_goes_in_exactly_one_part():
    # A submission replayed after the cancel writes its lot late, wherever its `seq` sorts.
    planned = [_lot(n, finished=n < 6) for n in range(20)]
    plans = plan_parts(_job_head(), [(URL, lot) for lot in planned], LIMIT)[URL]
    now = [*planned[:9], _lot("lot-008b", False), *planned[9:], _lot("lot-999", False)]
    assert _lot_ids(_sent(plans, [now] * len(plans))) == [lot["lot_id"] for lot in now]


def test_a_lot_completed_past_the_limit_goes_as_planned_and_alone_in_a_redelivery():
    at_cancel = [_lot(n, finished=False) for n in range(4)]
    later = [_lot(0, False), _lot(1, True, text_bytes=3 * LIMIT), _lot(2, False), _lot(3, False)]
    [plan] = plan_parts(_job_head(), [(URL, lot) for lot in at_cancel], LIMIT)[URL]
    assert orjson.loads(_sent([plan], [later])[0])["lots"] == at_cancel
    redelivered = plan_parts(_job_head(), [(URL, lot) for lot in later], LIMIT)[URL]
    parts = [orjson.loads(part_body(_job_head(), lambda: later, part, len(redelivered), LIMIT, plan))
             for part, plan in enumerate(redelivered, start=1)]
    assert [[lot["lot_id"] for lot in doc["lots"]] for doc in parts] == [
        ["lot-000"], ["lot-001"], ["lot-002", "lot-003"]]


def test_a_completed_jobs_plan_keeps_only_its_boundaries():
    # Nothing of a completed job moves any more: its plans hold no copy of lots or head.
    lots = [_lot(n, finished=True) for n in range(20)]
    plans = plan_parts(_job_head("completed"), [(URL, lot) for lot in lots], LIMIT)[URL]
    assert [(plan.head, plan.as_planned) for plan in plans] == [(None, {})] * len(plans)
    assert [(plan.after, plan.through) for plan in plans][::len(plans) - 1] == [
        (None, plans[0].through), (plans[-2].through, None)]


def test_a_stored_plan_builds_the_same_part():
    at_cancel = [_lot(n, finished=n < 6) for n in range(20)]
    plans = plan_parts(_job_head(), [(URL, lot) for lot in at_cancel], LIMIT)[URL]
    stored = [PartPlan.from_json(orjson.loads(orjson.dumps(plan.to_json()))) for plan in plans]
    assert _sent(stored, [at_cancel] * 3) == _sent(plans, [at_cancel] * 3)
