"""`merged_page`: the listing's page of projected jobs and those read through the outbox, from only
the projected rows near the page (not every row before it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from lotlens_common.read_models import JobView
from lotlens_gateway.job_store import merged_page
from lotlens_gateway.listing_cursor import listing_position as _newest_first

_START = datetime(2026, 1, 1, tzinfo=UTC)


def job(number: int, second: int | None) -> JobView:
    created = None if second is None else _START + timedelta(seconds=second, microseconds=number % 3)
    return JobView(job_id=f"job-{number:03}", client_id="acme", status="pending", api_version="1.0.0",
                   languages=["en"], total_lots=1, processed_lots=0, failed_lots=0, images_processed=0,
                   webhook_configured=False, error_message=None, created_at=created, updated_at=_START,
                   estimated_completion=None, completed_at=None, cancelled_at=None)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20) | st.none()), max_size=40),
       st.integers(0, 50), st.integers(1, 10))
def test_a_page_merged_from_the_rows_near_it_is_the_page_of_every_job_merged(
        jobs: list[tuple[bool, int | None]], offset: int, limit: int) -> None:
    made = [(unseen, job(number, second)) for number, (unseen, second) in enumerate(jobs)]
    # PostgreSQL lists projected rows with a creation time only (the others are read as unseen).
    projected = sorted((view for unseen, view in made if not unseen and view.created_at), key=_newest_first)
    unseen = [view for is_unseen, view in made if is_unseen or view.created_at is None]
    skipped = max(0, offset - len(unseen))
    near = projected[skipped:offset + limit]
    expected = sorted(projected + unseen, key=_newest_first)[offset:offset + limit]
    assert merged_page(near, unseen, skipped, offset, limit) == expected

