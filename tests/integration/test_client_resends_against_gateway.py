"""The SDK's resends against a real gateway (uvicorn, Kafka, PostgreSQL): a submission whose answer
never came is sent again under its Idempotency-Key, meets the first attempt still in progress
(409 `IDEMPOTENCY_KEY_IN_PROGRESS`), waits, and gets that attempt's job; never a second one.

The first attempt is held in its one durable write by a lock on the outbox table, as the
intake-slot tests hold it, for longer than the SDK waits for an answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine, text

from lotlens_client import LotLensClient, NetworkError
from tests.integration.gateway_support import Gateway, make_lots
from tests.polling import wait_for

pytestmark = pytest.mark.integration

# Far below the time the first attempt is held: every first attempt gets no answer.
NO_ANSWER_S = 1.0


@contextmanager
def outbox_locked(engine: Engine) -> Iterator[Connection]:
    """The outbox locked against the gateway's write until the yielded connection rolls back."""
    with engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE"))
        try:
            yield blocker
        finally:
            blocker.rollback()


def answer_stored(engine: Engine, client_id: str, key: str) -> None:
    """Until the gateway has stored the answer under the key (the held attempt's job is written)."""
    query = text("SELECT status_code FROM idempotency_keys WHERE client_id = :c AND key = :k")

    def stored() -> bool:
        with engine.connect() as conn:
            return conn.execute(query, {"c": client_id, "k": key}).scalar() is not None

    wait_for(stored, "the held submission's answer stored", every_s=0.1)


def jobs_written(engine: Engine, client_id: str) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT DISTINCT job_id FROM outbox WHERE client_id = :c"), {"c": client_id})
        return {str(row[0]) for row in rows}


def test_a_submission_with_no_answer_is_resent_under_its_key_and_gets_the_one_job(
        gateway: Gateway, engine: Engine) -> None:
    # The SDK gave up on the answer (NetworkError, no key told) and its caller's retry made a
    # second paid job; the resend now keeps the key, and 409 in progress is waited out, not raised.
    key = "resent-order-1"
    slept: list[float] = []
    with outbox_locked(engine) as blocker:
        def pause(seconds: float) -> None:
            slept.append(seconds)
            if len(slept) == 2:  # after the 409: the first attempt's write goes through
                blocker.rollback()
                answer_stored(engine, gateway.client_id, key)

        with LotLensClient(gateway.url, gateway.key, timeout=NO_ANSWER_S, sleep=pause) as sdk:
            accepted = sdk.submit_job(make_lots(2), idempotency_key=key)
    assert slept == [1.0, 5.0], "a resend after no answer, then the 409's Retry-After"
    assert jobs_written(engine, gateway.client_id) == {accepted.job_id}


def test_when_the_resends_run_out_the_error_names_the_key_that_finds_the_job_again(
        gateway: Gateway, engine: Engine) -> None:
    lot_list = make_lots(2)
    sdk = LotLensClient(gateway.url, gateway.key, timeout=NO_ANSWER_S, max_retries=0)
    with outbox_locked(engine), sdk, pytest.raises(NetworkError) as raised:
        sdk.submit_job(lot_list)  # no key given: the SDK made one up
    key = raised.value.idempotency_key
    assert key and raised.value.details["idempotency_key"] == key
    answer_stored(engine, gateway.client_id, key)
    with LotLensClient(gateway.url, gateway.key) as sdk:
        again = sdk.submit_job(lot_list, idempotency_key=key)
    assert jobs_written(engine, gateway.client_id) == {again.job_id}
