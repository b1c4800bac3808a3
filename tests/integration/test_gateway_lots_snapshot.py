"""`GET /api/v1/batch-jobs/{job_id}/lots` while the result-store projects the job: a page lists the
projected lots, then those only the gateway's outbox holds, and both reads must see one moment
of the database.

The projecting is done from a hook on the gateway's own statements (SQLAlchemy's
`before_cursor_execute`): right before its read of the lots only the outbox holds, after it read
the projected ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from lotlens_common.tables import jobs, lots
from tests.integration.gateway_support import Gateway, make_lots
from tests.integration.plan_support import on_each_statement

pytestmark = pytest.mark.integration
LOTS, PROJECTED, PROJECTED_MID_PAGE = 200, 40, 110


def project_lots(engine: Engine, job_id: str, lot_list: list[dict[str, Any]], first: int) -> None:
    """The lots' `LotSubmitted` projected, as the result-store writes them (`seq` their place)."""
    with engine.begin() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": lot["lot_id"], "seq": first + n,
                                     "missing_images": []} for n, lot in enumerate(lot_list)])


@pytest.fixture
def projected_mid_page(engine: Engine) -> Iterator[list[tuple[str, list[dict[str, Any]]]]]:
    """Projects the lots the test names, (job, lots), the moment the gateway reads the job's
    lots only its outbox holds, after it read the projected ones."""
    due: list[tuple[str, list[dict[str, Any]]]] = []

    def before(statement: str, parameters: Any) -> None:
        # The outbox's `LotSubmitted` rows not projected (not its `JobSubmitted`, read before).
        if due and "FROM outbox" in statement and "FROM lots" in statement and due[0][0] in str(parameters):
            job_id, lot_list = due.pop()
            project_lots(engine, job_id, lot_list, PROJECTED)

    with on_each_statement(Engine, before):
        yield due


def test_a_lots_page_read_while_the_result_store_projects_lists_every_lot_once(
        gateway: Gateway, engine: Engine, projected_mid_page: list[tuple[str, list[dict[str, Any]]]]) -> None:
    # The projected lots and the outbox's were read in two statements of no common snapshot: lots
    # projected in between were in neither, and the page said `total` 90 of 200, `has_more` false.
    lot_list = make_lots(LOTS)
    submitted = gateway.submit(lot_list)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(
            job_id=job_id, client_id=gateway.client_id, status="processing", api_version="1.0.0",
            languages=["en"], total_lots=LOTS, created_at=now, updated_at=now))
    project_lots(engine, job_id, lot_list[:PROJECTED], 0)
    projected_mid_page.append((job_id, lot_list[PROJECTED:PROJECTED + PROJECTED_MID_PAGE]))

    answer = gateway.get_job("/api/v1/batch-jobs/{job_id}/lots?limit=500", job_id)

    assert answer.status_code == 200, answer.text[:300]
    assert not projected_mid_page, "the gateway never read the job's outbox lots"
    body = answer.json()
    listed = [lot["lot_id"] for lot in body["lots"]]
    assert (body["pagination"]["total"], body["pagination"]["has_more"], len(listed)) == (LOTS, False, LOTS)
    assert sorted(listed) == sorted(lot["lot_id"] for lot in lot_list)
