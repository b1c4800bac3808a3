"""The delivery backlog the dispatcher exports (`lotlens_webhook_pending_deliveries`,
`lotlens_webhook_oldest_pending_age_seconds`): the open deliveries, aged by the oldest of them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from lotlens_common.clock import utc_now
from lotlens_common.tables import dispatch_queue
from lotlens_webhook_dispatcher import dispatch_queue as schedule
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import CLIENT

pytestmark = pytest.mark.integration


def test_the_backlog_is_aged_by_its_oldest_open_delivery(db) -> None:
    # Checked with one delivery only, the oldest's age and the newest's were the same number.
    ages = {"pending": timedelta(hours=2), "sending": timedelta(minutes=1),
            "delivered": timedelta(hours=5)}  # finished: no longer part of the backlog
    with db.begin() as conn:
        for status, age in ages.items():
            job_id = new_id("job-")
            schedule.schedule(conn, job_id, CLIENT, {f"https://hooks.example.com/{status}": [PartPlan()]},
                              utc_now())
            conn.execute(update(dispatch_queue).where(dispatch_queue.c.job_id == job_id)
                         .values(status=status, created_at=utc_now() - age))
    with db.connect() as conn:
        pending, oldest_s = schedule.backlog(conn, utc_now())
    assert pending == 2
    assert oldest_s == pytest.approx(7200, abs=5)
