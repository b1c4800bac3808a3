"""A batch's events are folded into one change per job before the `jobs` row is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled, LotSubmitted, VisionBatchSubmitted
from lotlens_common.model.usage import Usage
from lotlens_common.row_sets import json_rows
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.grouping import event_of, latest_events

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def lot(job_id: str, lot_id: str, at: datetime = T0, info: str = "") -> Envelope:
    return Envelope(client_id="acme", occurred_at=at, event=LotSubmitted(
        job_id=job_id, lot_id=lot_id, seq=0, total_lots=3, additional_info=info, image_urls=(),
        languages=("en",)))


def batch(job_id: str) -> Envelope:
    return Envelope(client_id="acme", occurred_at=T0, event=VisionBatchSubmitted(
        job_id=job_id, shard_id="s", attempt=1, batch_id="b", lot_ids=("1",)))


def test_events_of_one_job_fold_into_one_change() -> None:
    changes = JobChanges()
    changes.touch(lot("j", "1"), total_lots=3)
    changes.touch(lot("j", "2", at=T0 + timedelta(seconds=5)), status="processing")
    changes.touch(lot("j", "3"), status="pending")
    assert len(changes) == 1
    change = changes.get("j")
    assert change is not None
    assert (change.client_id, change.total_lots, change.status) == ("acme", 3, "processing")
    assert change.last_event_at == T0 + timedelta(seconds=5)


def test_a_cancellation_in_the_batch_wins_over_earlier_stages() -> None:
    changes = JobChanges()
    changes.touch(batch("j"), status="translating")
    changes.touch(Envelope(client_id="acme", event=JobCancelled(job_id="j", cancelled_at=T0)),
                  status="cancelled")
    changes.touch(batch("j"), status="processing")
    change = changes.get("j")
    assert change is not None and change.status == "cancelled"


def test_touched_jobs_are_listed_in_id_order_so_rows_lock_in_one_order() -> None:
    changes = JobChanges()
    for job_id in ("c", "a", "b"):
        changes.touch(lot(job_id, "1"))
    assert [job_id for job_id, _ in changes.items()] == ["a", "b", "c"]
    assert changes.job_ids() == {"a", "b", "c"}


def test_a_duplicated_event_is_kept_once_per_natural_key() -> None:
    envelopes = [lot("j", "1", info="first"), lot("j", "2"), lot("j", "1", info="again")]
    kept = latest_events(envelopes, LotSubmitted, lambda e: (e.job_id, e.lot_id))
    assert [(e.lot_id, e.additional_info) for e in kept] == [("1", "again"), ("2", "")]


def test_an_event_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError):
        event_of(batch("j"), LotSubmitted)


def test_row_sets_keep_non_ascii_urls_readable() -> None:
    assert json_rows([{"image_urls": ("https://example.com/é.jpg",)}]) == '[{"image_urls":["https://example.com/é.jpg"]}]'


def test_a_model_in_a_row_set_goes_in_as_its_own_json() -> None:
    rows = json_rows([{"usage": Usage(input_tokens=3, model="o4-mini")}, {"usage": None}])
    used = Usage(input_tokens=3, model="o4-mini")
    assert orjson.loads(rows) == [{"usage": used.model_dump()}, {"usage": None}]
    with pytest.raises(TypeError):
        json_rows([{"when": object()}])
