"""The gateway when PostgreSQL stalls rather than fails: a table it needs held locked (an
operator's manual fix, a long migration) is a 503 in the contract's format within the request's
lock timeout, not a request waiting as long as the lock; nothing of a refused submission is
written; everything works again once the lock goes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError

from lotlens_common.settings import DatabaseSettings, ServiceSettings
from lotlens_common.tables import idempotency_keys, outbox
from lotlens_gateway.bootstrap import gateway_engine
from tests.conftest import Infra, new_id
from tests.integration.gateway_support import (
    Gateway,
    gateway_settings,
    insert_running_job,
    make_lots,
    new_key,
    running_gateway,
)
from tests.stalls import tables_locked, terminate_sessions

pytestmark = pytest.mark.integration


@pytest.fixture()
def sessions() -> str:
    """The `application_name` of this test's gateway's sessions (`pg_terminate_backend` ends them)."""
    return new_id("lotlens-gateway-")


@pytest.fixture()
def gateway(settings: ServiceSettings, sessions: str) -> Iterator[Gateway]:
    """A gateway whose engines are both built as `__main__` builds them (the harness's writes
    engine is otherwise the tests' shared one)."""
    named = DatabaseSettings(DATABASE_URL=f"{settings.database.database_url}?application_name={sessions}")
    writes = gateway_engine(gateway_settings(settings, {"builder": new_key()}, database=named))
    try:
        with running_gateway(settings, writes) as running:
            yield running
    finally:
        writes.dispose()


STATUS = "/api/v1/batch-status/{job_id}"
# Far beyond the gateway's lock timeout; before it had one, the request waited as long as the lock.
CLIENT_PATIENCE_S = 30.0


def _unavailable(response: httpx2.Response) -> None:
    """A 503 in the contract's format, with Retry-After."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "SERVICE_UNAVAILABLE" and body["error"] and body["message"], body
    assert int(response.headers["Retry-After"]) > 0


def test_a_status_read_while_the_jobs_table_is_locked_is_a_503_and_works_once_the_lock_goes(
        gateway: Gateway, engine: Engine, infra: Infra) -> None:
    job_id = insert_running_job(engine, gateway.client_id)
    signature = {"X-Signature": gateway.sign(job_id)}
    url = f"{gateway.url}{STATUS.format(job_id=job_id)}"
    with tables_locked(infra.database_url, "jobs"):
        try:
            response = httpx2.get(url, headers=signature, timeout=CLIENT_PATIENCE_S)
        except httpx2.ReadTimeout:
            pytest.fail(f"a status read got no answer in {CLIENT_PATIENCE_S:g} s while `jobs` was locked")
        _unavailable(response)
    again = httpx2.get(url, headers=signature, timeout=CLIENT_PATIENCE_S)
    assert again.status_code == 200 and again.json()["job_id"] == job_id, again.text


def test_a_submission_while_the_outbox_is_locked_is_a_503_writes_nothing_and_its_resend_is_accepted(
        gateway: Gateway, engine: Engine, infra: Infra) -> None:
    lots, key = make_lots(2), new_id("stall-")
    body = {"signature": gateway.lots_signature(lots), "version": "1.0.0", "languages": ["en"], "lots": lots}
    url = f"{gateway.url}/api/v1/generate-descriptions"
    headers = {"Idempotency-Key": key}
    with tables_locked(infra.database_url, "outbox"):
        try:
            response = httpx2.post(url, json=body, headers=headers, timeout=CLIENT_PATIENCE_S)
        except httpx2.ReadTimeout:
            pytest.fail(f"a submission got no answer in {CLIENT_PATIENCE_S:g} s while `outbox` was locked")
        _unavailable(response)
    with engine.connect() as conn:
        written = conn.execute(select(func.count()).select_from(outbox)
                               .where(outbox.c.client_id == gateway.client_id)).scalar_one()
        reserved = conn.execute(select(func.count()).select_from(idempotency_keys)
                                .where(idempotency_keys.c.client_id == gateway.client_id)).scalar_one()
    assert (written, reserved) == (0, 0), "a refused submission left rows behind"
    accepted = httpx2.post(url, json=body, headers=headers, timeout=CLIENT_PATIENCE_S)
    assert accepted.status_code == 201, accepted.text


def test_a_gateway_whose_sessions_are_terminated_serves_again_by_itself_and_loses_no_submission(
        gateway: Gateway, engine: Engine, infra: Infra, sessions: str) -> None:
    job_id = insert_running_job(engine, gateway.client_id)
    lots, headers = make_lots(2), {"Idempotency-Key": new_id("ended-")}
    assert gateway.get_job(STATUS, job_id).status_code == 200  # each pool holds a session now
    accepted = gateway.submit(lots, headers=headers)
    assert accepted.status_code == 201, accepted.text
    assert terminate_sessions(infra.database_url, sessions) > 0
    # No ping before each use (`make_engine`): a pool's first statement on an ended session may
    # be a 503; that error drops the whole pool, and the next request gets a new session.
    reads = [gateway.get_job(STATUS, job_id) for _ in range(2)]
    resends = [gateway.submit(lots, headers=headers) for _ in range(2)]
    for answer in (reads[0], resends[0]):
        if answer.status_code == 503:
            _unavailable(answer)
    assert reads[1].status_code == 200, reads[1].text
    assert resends[1].status_code == 201 and resends[1].json() == accepted.json(), resends[1].text
    with engine.connect() as conn:
        submitted = conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.client_id == gateway.client_id, outbox.c.event_type == "JobSubmitted")).scalar_one()
    assert submitted == 1


@pytest.mark.parametrize("failing", ["writes", "reads"])
def test_a_session_lost_on_one_of_the_gateways_pools_renews_the_other_pool_too(
        gateway: Gateway, infra: Infra, sessions: str, failing: str) -> None:
    # A status read uses both pools (its rate limit, then its read): with each pool learning of
    # the failover on its own, a client got a 503 per pool, two in a row (the test above, when the
    # relay's loop did not happen to hit the dead write session first).
    store = gateway.deps.store
    pools = {"writes": store.engine, "reads": store.reads}
    for engine in pools.values():
        with engine.connect() as conn:  # a pooled session in each
            conn.execute(text("SELECT 1"))
    assert terminate_sessions(infra.database_url, sessions) > 0
    # The gateway's relay runs meanwhile: when its loop hits the dead write session first, both
    # pools are renewed before this connect, which then passes (a loaded CI machine: DID NOT RAISE).
    # Either way the other pool must serve at once.
    with contextlib.suppress(OperationalError), pools[failing].connect() as conn:
        conn.execute(text("SELECT 1"))
    [other] = [engine for name, engine in pools.items() if name != failing]
    with other.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
