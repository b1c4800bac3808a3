"""Idempotency-Key reservations on the real database: two requests racing for one key, a
reservation left by a request that died, one taken over from a request still running, and a
resend's replay while intake is busy."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from sqlalchemy import Engine, func, select, text, update

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import idempotency_keys
from lotlens_gateway.errors import ApiError
from lotlens_gateway.idempotency import IdempotencyStore, Replay, Reservation, request_hash
from lotlens_gateway.metrics import GatewayMetrics
from tests.conftest import new_id
from tests.integration.gateway_support import (
    Gateway,
    intake_filled,
    jobs_written,
    make_lots,
    running_gateway,
    until,
)
from tests.integration.lock_waits import waiting_on_a_lock

pytestmark = pytest.mark.integration

STALE_S = 300.0
JOB_LEASE_S = 0.5
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def store(engine: Engine) -> IdempotencyStore:
    return IdempotencyStore(engine, ttl_s=86_400, stale_after_s=STALE_S, metrics=GatewayMetrics())


def test_of_two_concurrent_requests_with_one_key_one_runs_and_the_other_is_told_it_is_in_progress(
        engine: Engine) -> None:
    keys, client, key = store(engine), new_id("c-"), new_id("k-")
    start = threading.Barrier(8)
    outcomes: list[object] = []

    def request() -> None:
        start.wait()
        try:
            outcomes.append(type(keys.reserve(client, key, "same-body", NOW)))
        except ApiError as exc:
            outcomes.append((exc.status, exc.code, exc.headers.get("Retry-After")))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count(Reservation) == 1, outcomes
    assert outcomes.count((409, "IDEMPOTENCY_KEY_IN_PROGRESS", "5")) == 7, outcomes


def silent_for(engine: Engine, client_id: str, key: str, seconds: float) -> None:
    """The key's reservation as it is once its request has not renewed it for `seconds`, by the
    database's clock (the one its lease is measured on)."""
    with engine.begin() as conn:
        conn.execute(update(idempotency_keys).where(
            idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key).values(
            renewed_at=func.now() - timedelta(seconds=seconds)))


def test_a_stale_reservation_is_taken_over_by_the_same_request_only(engine: Engine) -> None:
    keys, client, key = store(engine), new_id("c-"), new_id("k-")
    assert isinstance(keys.reserve(client, key, "body", NOW), Reservation)  # its gateway then dies
    silent_for(engine, client, key, STALE_S - 10)
    # Not renewed for less than the lease: in progress, however far ahead the asking replica's clock is.
    with pytest.raises(ApiError) as young:
        keys.reserve(client, key, "body", NOW + timedelta(seconds=10 * STALE_S))
    assert young.value.code == "IDEMPOTENCY_KEY_IN_PROGRESS"
    silent_for(engine, client, key, STALE_S + 1)
    later = NOW + timedelta(seconds=STALE_S + 1)
    with pytest.raises(ApiError) as other:
        keys.reserve(client, key, "another body", later)
    assert other.value.code == "IDEMPOTENCY_KEY_REUSED"
    retried = keys.reserve(client, key, "body", later)
    assert isinstance(retried, Reservation), "a dead request's reservation blocks its retry"
    keys.complete(retried, 201, {"job_id": "j"})
    replay = keys.reserve(client, key, "body", later + timedelta(seconds=STALE_S + 1))
    assert replay == Replay(201, {"job_id": "j"})


def test_a_replay_is_answered_before_the_rate_limit_and_uses_none_of_it(
        settings: ServiceSettings, engine: Engine) -> None:
    # A client whose 201 was lost retries with the same key: it was refused 429 for up to a
    # minute (the count came first), and each replay used up its quota.
    with running_gateway(settings, engine, rate_limit_batch=1) as gw:
        lots, key = make_lots(2), {"Idempotency-Key": "lost-201"}
        first = gw.submit(lots, headers=key)
        again = gw.submit(lots, headers=key)
        assert first.status_code == 201 and again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        limited = gw.submit(make_lots(2))  # the limit itself holds
        assert limited.status_code == 429 and limited.json()["code"] == "RATE_LIMIT_EXCEEDED"


def test_a_key_released_while_a_resend_reads_it_is_the_resend_s_to_take_not_a_500(
        settings: ServiceSettings, engine: Engine) -> None:
    # The first request under a key is refused (a 429, say) and releases the key just as its
    # resend, having found the key taken, reads it: the read found no row and answered 500.
    with running_gateway(settings, engine) as gw:
        lots, key = make_lots(2), new_id("k-")
        body = json.dumps({"signature": gw.lots_signature(lots), "version": "1.0.0", "languages": ["en"],
                           "lots": lots}).encode()
        gw.deps.idempotency.reserve(gw.client_id, key, request_hash(body), datetime.now(UTC))
        with ThreadPoolExecutor(1) as pool, engine.connect() as first:
            # The first request's release takes the row's lock, then deletes it; the lock keeps the
            # resend between its insert (the key taken) and its read, as a slower thread would.
            mine = {"client": gw.client_id, "key": key}
            first.execute(text("SELECT 1 FROM idempotency_keys WHERE client_id = :client AND key = :key "
                               "FOR UPDATE"), mine)
            resend = pool.submit(httpx2.post, f"{gw.url}/api/v1/generate-descriptions", content=body,
                                 headers={"Idempotency-Key": key}, timeout=60)
            until(lambda: waiting_on_a_lock(engine, "SELECT idempotency_keys.") > 0, resend,
                  "the resend to read the key")
            first.execute(text("DELETE FROM idempotency_keys WHERE client_id = :client AND key = :key"), mine)
            first.commit()
            answer = resend.result(timeout=60)
        assert answer.status_code == 201, answer.text
        replayed = httpx2.post(f"{gw.url}/api/v1/generate-descriptions", content=body,
                               headers={"Idempotency-Key": key}, timeout=60)
        assert replayed.headers["idempotent-replayed"] == "true" and replayed.json() == answer.json()


class MovableClock:
    """The real time, moved on by the test: a lease runs out without the test waiting for it."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


def lease_lapsed(engine: Engine, client_id: str, key: str) -> bool:
    """Whether the key's reservation has gone unrenewed for longer than a job's lease (with room)."""
    with engine.connect() as conn:
        return bool(conn.execute(select(idempotency_keys.c.renewed_at < func.now() - timedelta(
            seconds=2 * JOB_LEASE_S)).where(idempotency_keys.c.client_id == client_id,
                                            idempotency_keys.c.key == key)).scalar())


def test_a_request_whose_key_a_resend_took_over_while_it_ran_writes_no_second_job(
        settings: ServiceSettings, engine: Engine) -> None:
    # A request still running when its reservation's lease ran out (350 s) had it taken over by
    # its resend, and then wrote its job as the resend wrote its own: one request, two paid jobs.
    # A request renews its job's reservation while it works, for at most the long lease (60 s):
    # one stuck past it (a hung thread) stops, and its key is taken over a job lease later.
    clock = MovableClock()
    with running_gateway(settings, engine, clock=clock, idempotency_lease_s=60.0, sync_timeout_s=20.0,
                         idempotency_job_lease_s=JOB_LEASE_S) as gw:
        lots, key = make_lots(2), {"Idempotency-Key": new_id("k-")}
        with ThreadPoolExecutor(2) as pool, engine.connect() as blocker:
            # Each request's one durable write waits on the outbox table, after its reservation.
            blocker.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))
            slow = pool.submit(gw.submit, lots, headers=key)
            until(lambda: waiting_on_a_lock(engine, "COPY outbox") == 1, slow, "the first write to wait")
            clock.ahead = timedelta(seconds=61)  # the slow request's renewals are over
            until(lambda: lease_lapsed(engine, gw.client_id, key["Idempotency-Key"]), slow,
                  "the slow request's reservation to lapse after the long lease")
            resend = pool.submit(gw.submit, lots, headers=key)
            until(lambda: waiting_on_a_lock(engine, "COPY outbox") == 2, resend,
                  "the resend to take the key")
            blocker.commit()
            answers = [slow.result(timeout=60), resend.result(timeout=60)]
        later = gw.submit(lots, headers=key)
        written = jobs_written(engine, gw.client_id)

    assert len(written) == 1, f"one request wrote {len(written)} jobs: {[a.text for a in answers]}"
    for answer in answers:
        body = answer.json()
        if answer.status_code != 201:  # the loser: told so in the contract's format, nothing written
            assert (answer.status_code, body["code"]) == (409, "IDEMPOTENCY_KEY_IN_PROGRESS"), answer.text
            assert "nothing was written" in body["message"] and answer.headers["retry-after"] == "5"
        else:
            assert body["job_id"] == written[0], answer.text
    assert [a.status_code for a in answers].count(201) >= 1
    assert later.status_code == 201 and later.headers["idempotent-replayed"] == "true"
    assert later.json()["job_id"] == written[0]


BUSY_MODES = pytest.mark.parametrize("waiting", [0, 1], ids=["not-admitted", "no-slot-in-time"])


def busy_gateway(settings: ServiceSettings, engine: Engine, waiting: int) -> AbstractContextManager[Gateway]:
    """A gateway whose one intake slot a 30-lot job takes (and `waiting` more wait for)."""
    return running_gateway(settings, engine, intake_slots=1, intake_waiting=waiting, intake_wait_s=0.5,
                           max_lot_bytes=2000)


@BUSY_MODES
def test_a_job_resent_after_a_lost_201_is_replayed_while_intake_is_busy(
        settings: ServiceSettings, engine: Engine, waiting: int) -> None:
    # The intake slot was taken before the key was looked up: the resend of a job accepted before
    # was refused 503 INTAKE_BUSY "nothing was written", while its job ran.
    with busy_gateway(settings, engine, waiting) as gw:
        lots, key = make_lots(30), {"Idempotency-Key": new_id("k-")}
        accepted = gw.submit(lots, headers=key)
        assert accepted.status_code == 201, accepted.text
        with intake_filled(gw, engine) as taking:
            resent = gw.submit(lots, headers=key)
            another = gw.submit(make_lots(30), headers={"Idempotency-Key": new_id("k-")})
        taken = taking.result()

    assert resent.status_code == 201, resent.text
    assert resent.json() == accepted.json() and resent.headers["idempotent-replayed"] == "true"
    assert resent.headers["location"] == accepted.headers["location"]
    # A job not accepted before is still refused, and writes nothing.
    assert (another.status_code, another.json()["code"]) == (503, "INTAKE_BUSY"), another.text
    assert taken.status_code == 201, taken.text
    written = sorted(jobs_written(engine, gw.client_id))
    assert written == sorted([accepted.json()["job_id"], taken.json()["job_id"]])


@BUSY_MODES
def test_another_client_s_header_signed_job_is_not_replayed_to_a_client_while_intake_is_busy(
        settings: ServiceSettings, engine: Engine, waiting: int) -> None:
    # The busy path found the job by key and bytes alone: a body signed by the X-Signature header
    # names no client, so client B sending A's exact bytes and key was answered A's 201 and job
    # id, and no job was made for B.
    with busy_gateway(settings, engine, waiting) as gw:
        lots, key = make_lots(30), new_id("k-")
        body = json.dumps({"version": "1.0.0", "languages": ["en"], "lots": lots}).encode()

        def send(signing_key: str) -> httpx2.Response:
            headers = {"Idempotency-Key": key, "X-Signature": gw.lots_signature(lots, signing_key)}
            return httpx2.post(f"{gw.url}/api/v1/generate-descriptions", content=body, headers=headers,
                               timeout=60)

        accepted = send(gw.key)
        assert accepted.status_code == 201, accepted.text
        with intake_filled(gw, engine):
            by_another = send(gw.other_key)
            resent = send(gw.key)

    assert (by_another.status_code, by_another.json().get("code")) == (503, "INTAKE_BUSY"), by_another.text
    assert jobs_written(engine, gw.other_id) == []
    # The client whose job it is still gets its replay.
    assert resent.status_code == 201 and resent.headers["idempotent-replayed"] == "true", resent.text
    assert resent.json() == accepted.json()
