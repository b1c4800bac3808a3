"""The relay's prune and the reads that overlay the outbox, while the result-store is behind.

The gateway reads a job's own outbox rows until the result-store has projected them (`overlay.py`).
The prune deleted rows by their publication age alone: once the result-store was more than
`LOTLENS_OUTBOX_RETENTION_S` behind, a job that got 201 was a 404, and a job cancelled with 200
read as running again. No result-store runs here: a test writes the read-model rows it projects,
and ages the job's rows past their retention instead of waiting for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, text

from lotlens_common.tables import jobs, lots, outbox
from tests.integration.gateway_support import Gateway, make_lots, wait_published
from tests.integration.plan_support import executed

pytestmark = pytest.mark.integration
STATUS = "/api/v1/batch-status/{job_id}"


def published_long_ago(gateway: Gateway, engine: Engine, job_id: str) -> None:
    """Once the relay has published the job's rows: as if that was two hours ago."""
    wait_published(gateway, engine, job_id)
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox SET published_at = published_at - interval '2 hours' "
                          "WHERE job_id = :job"), {"job": job_id})


def submitted(gateway: Gateway, lot_count: int) -> tuple[str, list[dict[str, object]]]:
    lot_list = make_lots(lot_count)
    answer = gateway.submit(lot_list)
    assert answer.status_code == 201, answer.text
    return answer.json()["job_id"], lot_list


def project_running(engine: Engine, gateway: Gateway, job_id: str, lot_list: list[dict[str, object]]) -> None:
    """The job's `JobSubmitted` and these lots' `LotSubmitted` projected; the job is processing."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(
            job_id=job_id, client_id=gateway.client_id, status="processing", api_version="1.0.0",
            languages=["en"], total_lots=4, created_at=now, updated_at=now))
        if lot_list:
            conn.execute(insert(lots), [{"job_id": job_id, "lot_id": lot["lot_id"], "seq": seq,
                                         "missing_images": []} for seq, lot in enumerate(lot_list)])


def outbox_rows(engine: Engine, job_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox.c.event_type).where(outbox.c.job_id == job_id)
                                 .order_by(outbox.c.id)).scalars())


def test_an_accepted_job_stays_readable_when_the_result_store_is_over_the_retention_behind(
        gateway: Gateway, engine: Engine) -> None:
    job_id, _ = submitted(gateway, 3)
    published_long_ago(gateway, engine, job_id)

    gateway.deps.relay.prune()

    status = gateway.get_job(STATUS, job_id)
    assert status.status_code == 200, status.text
    assert (status.json()["status"], status.json()["progress"]["total_lots"]) == ("pending", 3)
    assert [job["id"] for job in gateway.list_jobs().json()["jobs"]] == [job_id]
    assert gateway.get_job("/api/v1/batch-jobs/{job_id}/lots", job_id).json()["pagination"]["total"] == 3
    assert gateway.cancel(job_id).status_code == 200


def test_a_job_cancelled_before_its_projection_stays_cancelled_past_the_retention(
        gateway: Gateway, engine: Engine) -> None:
    job_id, _ = submitted(gateway, 4)
    project_running(engine, gateway, job_id, [])
    assert gateway.cancel(job_id).status_code == 200
    published_long_ago(gateway, engine, job_id)

    gateway.deps.relay.prune()

    status = gateway.get_job(STATUS, job_id)
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "cancelled"
    assert outbox_rows(engine, job_id) == ["LotSubmitted"] * 4 + ["JobCancelled"]


def test_the_prune_deletes_what_the_read_models_hold_and_keeps_the_rest(
        gateway: Gateway, engine: Engine) -> None:
    job_id, lot_list = submitted(gateway, 4)
    project_running(engine, gateway, job_id, lot_list[:2])
    published_long_ago(gateway, engine, job_id)

    assert gateway.deps.relay.prune() == 3  # the JobSubmitted and the two projected lots

    assert outbox_rows(engine, job_id) == ["LotSubmitted"] * 2
    page = gateway.get_job("/api/v1/batch-jobs/{job_id}/lots", job_id).json()
    assert [lot["lot_id"] for lot in page["lots"]] == [lot["lot_id"] for lot in lot_list]


def test_a_prune_behind_an_unprojected_backlog_reads_one_batch_of_it(
        gateway: Gateway, engine: Engine) -> None:
    # Every old row examined at every minute-ly prune would be a scan of a long outage's backlog.
    job_id, _ = submitted(gateway, 2)
    published_long_ago(gateway, engine, job_id)
    long_ago = datetime.now(UTC) - timedelta(hours=3)
    with engine.begin() as conn:  # a backlog the result-store has not projected, older than the job
        conn.execute(insert(outbox), [
            {"topic": gateway.settings.topics.submissions, "job_id": f"{job_id}-{n % 50}",
             "client_id": gateway.client_id, "event_type": "LotSubmitted", "payload": "{}",
             "published_at": long_ago} for n in range(12_000)])

    statements = executed(engine, gateway.deps.relay.prune)

    reads = [statement for statement, _ in statements if "SKIP LOCKED" in statement]
    assert len(reads) == 1, f"{len(reads)} batches of the backlog read"
    assert len(outbox_rows(engine, job_id)) == 3
