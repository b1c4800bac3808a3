"""The job listing's cursor: it says exactly where a page ended, to the microsecond and the job id."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from lotlens_common.read_models import JobView
from lotlens_gateway.listing_cursor import CURSOR_PATTERN, ListingCursor, listing_position

_SECOND = datetime(2025, 8, 5, 7, 30, 15, tzinfo=UTC)
_JOB = JobView(job_id="550e8400-e29b-41d4-a716-446655440000", client_id="acme", status="pending",
               api_version="1.0.0", languages=["en"], total_lots=2, processed_lots=0, failed_lots=0,
               images_processed=0, webhook_configured=False, error_message=None, created_at=_SECOND,
               updated_at=_SECOND, estimated_completion=None, completed_at=None, cancelled_at=None)

_job_ids = st.text("0123456789abcdef-", min_size=1, max_size=40)
# A job's creation time: microseconds into _SECOND, or none (a row projected before its
# `JobSubmitted`, whose outbox row is gone).
_created = st.one_of(st.none(), st.integers(0, 20).map(lambda n: _SECOND + timedelta(microseconds=n)))


@given(st.one_of(st.none(), st.integers(0, 10**6 - 1)), _job_ids)
def test_a_cursor_reads_back_as_the_job_it_was_written_after(micros: int | None, job_id: str) -> None:
    created = None if micros is None else _SECOND + timedelta(microseconds=micros)
    written = str(ListingCursor.after(replace(_JOB, job_id=job_id, created_at=created)))
    assert re.fullmatch(CURSOR_PATTERN.strip("^$"), written)  # what the listing takes back
    assert ListingCursor.parse(written) == ListingCursor(created, job_id)


@given(_created, _job_ids, _created, _job_ids)
def test_a_cursor_lets_through_exactly_the_jobs_listed_after_its_own(
        mine: datetime | None, my_id: str, other: datetime | None, other_id: str) -> None:
    last = replace(_JOB, job_id=my_id, created_at=mine)
    job = replace(_JOB, job_id=other_id, created_at=other)
    assert ListingCursor.after(last).precedes(job) == (listing_position(job) > listing_position(last))
    assert not ListingCursor.after(last).precedes(last)


def test_jobs_without_a_creation_time_lead_the_listing_as_nulls_lead_a_descending_order() -> None:
    undated = replace(_JOB, job_id="b", created_at=None)
    newest = replace(_JOB, job_id="a", created_at=_SECOND + timedelta(days=365))
    assert listing_position(undated) < listing_position(newest)
    assert str(ListingCursor.after(undated)) == "null.b"
    assert ListingCursor.parse("null.b").precedes(newest)
    assert not ListingCursor.after(newest).precedes(undated)
