"""A job's Idempotency-Key while its intake outlasts the key's short lease and the client's
timeout: the request still writing keeps the key, the client's resend to another replica hears
409, and once the write is in the resend gets its 201. Two gateways on one database."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from sqlalchemy import Engine, func, select, text

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import idempotency_keys
from tests.conftest import new_id
from tests.integration.gateway_support import (
    jobs_written,
    make_lots,
    running_gateway,
    until,
)
from tests.integration.lock_waits import waiting_on_a_lock
from tests.polling import wait_for

pytestmark = pytest.mark.integration

# LOTLENS_IDEMPOTENCY_JOB_LEASE_S: a dead request's key is free again this soon.
LEASE_S = 0.5
# The SDK gives up on an answer after this and sends the request again.
CLIENT_TIMEOUT_S = 2.0


def ahead_by(skew: timedelta) -> Callable[[], datetime]:
    """The clock of a replica whose clock runs `skew` ahead of the others'."""
    return lambda: datetime.now(UTC) + skew


def reserved_longer_than(engine: Engine, client_id: str, key: str, seconds: float) -> bool:
    """Whether the key was reserved more than `seconds` ago, by the database's clock."""
    with engine.connect() as conn:
        return bool(conn.execute(select(
            idempotency_keys.c.created_at < func.now() - timedelta(seconds=seconds)).where(
            idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key)).scalar())


def test_a_resend_while_a_slow_job_intake_still_writes_hears_409_and_then_gets_its_201(
        settings: ServiceSettings, engine: Engine) -> None:
    # The job lease ran from the reservation, never renewed: a request slower than the SDK's
    # timeout had its key taken over by the resend, its own write rolled back (ReservationLost),
    # the resend as slow had its key taken by the next... no attempt wrote anything.
    with running_gateway(settings, engine, idempotency_job_lease_s=LEASE_S) as first, \
            running_gateway(settings, engine, client_id=first.client_id, client_key=first.key,
                            clock=ahead_by(timedelta(seconds=30)), idempotency_job_lease_s=LEASE_S) as second:
        lots, key = make_lots(2), new_id("k-")
        with ThreadPoolExecutor(2) as pool, engine.connect() as blocker:
            # The write (one COPY) waits on the outbox table, after the key's reservation: a slow
            # or overloaded database.
            blocker.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))
            slow = pool.submit(first.submit, lots, headers={"Idempotency-Key": key}, timeout=CLIENT_TIMEOUT_S)
            until(lambda: waiting_on_a_lock(engine, "COPY outbox") == 1, slow, "the first write to wait")
            with pytest.raises(httpx2.TimeoutException):
                slow.result(timeout=30)  # the client gave up; its request goes on
            wait_for(lambda: reserved_longer_than(engine, first.client_id, key, 4 * LEASE_S),
                     "the reservation to age", timeout_s=90, every_s=0.2)
            resend = pool.submit(second.submit, lots, headers={"Idempotency-Key": key}, timeout=30)
            wait_for(lambda: resend.done() or waiting_on_a_lock(engine, "COPY outbox") == 2,
                     "the resend to answer or write", timeout_s=90, every_s=0.2)
            assert resend.done(), "the resend took the key over from the request still writing it"
            refused = resend.result()
            assert (refused.status_code, refused.json()["code"]) == (409, "IDEMPOTENCY_KEY_IN_PROGRESS"), \
                refused.text
            assert refused.headers["retry-after"] == "5"
            blocker.commit()
        wait_for(lambda: len(jobs_written(engine, first.client_id)) == 1, "the slow request's job",
                 timeout_s=90, every_s=0.2)
        again = second.submit(lots, headers={"Idempotency-Key": key})
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, "true"), again.text
    assert [again.json()["job_id"]] == jobs_written(engine, first.client_id)
