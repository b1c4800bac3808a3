"""A submission whose COMMIT reached PostgreSQL but whose acknowledgement never came back."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from lotlens_common.db import make_engine
from lotlens_common.events import JobSubmitted
from lotlens_common.settings import DatabaseSettings, ServiceSettings
from lotlens_common.tables import outbox
from tests.freezing_proxy import freezing_proxy
from tests.integration.gateway_support import make_lots, running_gateway

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("commit_reached", [True, False], ids=["committed", "commit-never-arrived"])
def test_a_submission_cut_at_its_commit_is_201_if_written_and_503_if_not(
        settings: ServiceSettings, engine: Engine, commit_reached: bool) -> None:
    # The connection broke after PostgreSQL committed the job and before the gateway heard it (a
    # failover): the client got a retryable 503 for a job that ran, and a resend without an
    # Idempotency-Key made (and paid for) a second one. Cut before the COMMIT, nothing is written.
    with freezing_proxy(engine.url.port or 5432) as proxy:
        proxied = make_engine(DatabaseSettings(
            DATABASE_URL=engine.url.set(port=proxy.port).render_as_string(hide_password=False)), "tests")
        try:
            with running_gateway(settings, proxied) as gw:
                proxy.cut_after(b"COPY outbox", b"COMMIT", unsent=not commit_reached)
                answer = gw.submit(make_lots(2))
                assert proxy.cut_done.is_set(), "the submission's COMMIT was not cut"
                written = submitted_jobs(engine, gw.client_id)
        finally:
            proxied.dispose()
    if commit_reached:
        assert len(written) == 1, "the proxy drops the answer only once PostgreSQL has committed"
        assert answer.status_code == 201, answer.text
        assert answer.json()["job_id"] == written[0]
    else:
        assert written == []
        assert (answer.status_code, answer.json()["code"]) == (503, "SERVICE_UNAVAILABLE"), answer.text
        assert "details" not in answer.json()  # nothing written, and known to be


def test_a_commit_the_database_cannot_report_on_is_503_saying_the_job_may_have_been_written(
        settings: ServiceSettings, engine: Engine) -> None:
    # The COMMIT went through and then PostgreSQL stopped answering (the failover goes on): the
    # generic 503 said nothing was written, and a resend without the key made a second job.
    with freezing_proxy(engine.url.port or 5432) as proxy:
        proxied = make_engine(DatabaseSettings(
            DATABASE_URL=engine.url.set(port=proxy.port).render_as_string(hide_password=False)), "tests",
            connect_timeout_s=1)
        try:
            with running_gateway(settings, proxied) as gw:
                proxy.cut_after(b"COPY outbox", b"COMMIT", then_freeze=True)
                answer = gw.submit(make_lots(2))
                assert proxy.cut_done.is_set(), "the submission's COMMIT was not cut"
                proxy.thaw()
                written = submitted_jobs(engine, gw.client_id)
        finally:
            proxied.dispose()
    assert len(written) == 1
    assert (answer.status_code, answer.json()["code"]) == (503, "SERVICE_UNAVAILABLE"), answer.text
    assert answer.json()["details"] == {"written": "unknown"}
    assert "Idempotency-Key" in answer.json()["message"] and answer.headers["retry-after"]


def submitted_jobs(engine: Engine, client_id: str) -> list[str]:
    """The ids of the client's jobs whose JobSubmitted the outbox holds (what PostgreSQL committed)."""
    with engine.connect() as conn:
        return list(conn.execute(select(outbox.c.job_id).where(
            outbox.c.client_id == client_id, outbox.c.event_type == JobSubmitted.event_type)).scalars())
