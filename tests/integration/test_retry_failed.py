"""`POST /api/v1/batch-jobs/{job_id}/retry-failed` through a real gateway, the SDK and `lotlens`:
only the failed lots go out again, as one new job linked both ways, the same job on every call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, insert, select, text, update

from lotlens_client import LotLensClient, NotFoundError, ValidationError
from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import idempotency_keys, lots, outbox
from lotlens_gateway.retry_failed import retry_job_id
from tests.events import read_to_end
from tests.integration.gateway_support import (
    Gateway,
    consume,
    documented,
    insert_finished_job,
    insert_running_job,
    intake_filled,
    make_lots,
    running_gateway,
    until,
)
from tests.integration.lock_waits import waiting_on_a_lock
from tests.integration.plan_support import executed

pytestmark = pytest.mark.integration
HOOK = "https://hooks.example.com/retried"


def retry(gateway: Gateway, job_id: str, key: str | None = None) -> httpx2.Response:
    return httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{job_id}/retry-failed",
                      headers={"X-Signature": gateway.sign(job_id, key)}, timeout=30)


def finished_job_with_failures(gateway: Gateway, engine: Engine) -> tuple[str, list[dict[str, Any]]]:
    """A completed job of 5 lots whose 2nd and 4th failed (the 4th had its own webhook)."""
    lot_list = make_lots(5)
    failed = [lot_list[1], lot_list[3]]
    job_id = insert_finished_job(engine, gateway.client_id, lot_list, ["en", "pt-BR"],
                                 failed=[str(lot["lot_id"]) for lot in failed])
    with engine.begin() as conn:
        conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.lot_id == failed[1]["lot_id"])
                     .values(webhook=HOOK))
    return job_id, failed


def test_only_the_failed_lots_become_one_linked_job_the_same_on_every_call(
        gateway: Gateway, engine: Engine, settings: ServiceSettings) -> None:
    job_id, failed = finished_job_with_failures(gateway, engine)
    first = retry(gateway, job_id)
    assert first.status_code == 201, first.text
    body = first.json()
    new_id = body["job_id"]
    assert new_id != job_id and body["retry_of"] == job_id and body["status"] == "accepted"
    assert body["total_lots"] == 2 and body["languages"] == ["en", "pt-BR"] and body["webhook_configured"]
    assert first.headers["location"] == f"/api/v1/batch-status/{new_id}"

    events = [envelope.event for _key, envelope in
              consume(settings.kafka.bootstrap_servers, settings.topics.submissions, 3)]
    submitted, *lot_events = events
    assert isinstance(submitted, JobSubmitted) and submitted.job_id == new_id and submitted.retry_of == job_id
    assert submitted.total_lots == 2 and submitted.webhook_urls == (HOOK,)
    lots_submitted = [e for e in lot_events if isinstance(e, LotSubmitted)]
    assert len(lots_submitted) == len(lot_events) and all(e.job_id == new_id for e in lots_submitted)
    resent = [(e.lot_id, e.additional_info, list(e.image_urls), e.webhook, e.seq) for e in lots_submitted]
    asked = [(lot["lot_id"], lot["additional_info"], [image["url"] for image in lot["images"]])
             for lot in failed]
    hooks = [None, HOOK]
    assert resent == [(*lot, hooks[seq], seq) for seq, lot in enumerate(asked)]

    again = retry(gateway, job_id)
    assert again.status_code == 200 and again.json()["job_id"] == new_id
    assert again.json()["retry_of"] == job_id
    assert again.headers["idempotent-replayed"] == "true"
    # Nothing written again: the outbox holds the first call's 3 events (read at once, not after
    # the relay's round), and the topic, read to its end, no more.
    with engine.connect() as conn:
        assert len(conn.execute(select(outbox.c.id).where(outbox.c.job_id == new_id)).all()) == 3
    assert len(read_to_end(settings.kafka.bootstrap_servers, settings.topics.submissions)) == 3

    new_status = gateway.get_job("/api/v1/batch-status/{job_id}", new_id).json()
    old_status = gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()
    assert new_status["retry_of"] == job_id and new_status["retried_as"] is None
    assert old_status["retried_as"] == new_id and old_status["retry_of"] is None


def test_unfinished_jobs_jobs_without_failures_and_strangers_are_refused_clearly(
        gateway: Gateway, engine: Engine) -> None:
    running = insert_running_job(engine, gateway.client_id, status="translating")
    refused = retry(gateway, running)
    assert refused.status_code == 409 and refused.json()["code"] == "JOB_NOT_FINISHED"
    assert "translating" in refused.json()["message"]

    clean = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    nothing = retry(gateway, clean)
    assert nothing.status_code == 409 and nothing.json()["code"] == "NO_FAILED_LOTS"
    # The OpenAPI document named three submission codes under this 409 and neither of these.
    conflicts = documented("post", "/api/v1/batch-jobs/{job_id}/retry-failed", 409)
    assert "JOB_NOT_FINISHED" in conflicts and "NO_FAILED_LOTS" in conflicts
    assert "DUPLICATE_LOT_ID" not in conflicts

    job_id, _failed = finished_job_with_failures(gateway, engine)
    assert retry(gateway, job_id, key=gateway.other_key).status_code == 404  # another client's job
    unsigned = httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{job_id}/retry-failed")
    assert unsigned.status_code == 401 and "job id" in unsigned.json()["message"]


def test_the_sdk_and_the_command_retry_failed_lots(gateway: Gateway, engine: Engine) -> None:
    job_id, failed = finished_job_with_failures(gateway, engine)
    with LotLensClient(gateway.url, gateway.key) as sdk:
        accepted = sdk.retry_failed(job_id)
        assert accepted.retry_of == job_id and accepted.total_lots == len(failed)
        assert sdk.retry_failed(job_id).job_id == accepted.job_id
        assert sdk.job_status(job_id).retried_as == accepted.job_id
        assert sdk.job_status(accepted.job_id).retry_of == job_id
        with pytest.raises(ValidationError) as not_finished:
            sdk.retry_failed(accepted.job_id)  # the retry job itself is still pending
        assert not_finished.value.status == 409 and not_finished.value.code == "JOB_NOT_FINISHED"
        with pytest.raises(NotFoundError):
            sdk.retry_failed("no-such-job")

    env = {**os.environ, "LOTLENS_URL": gateway.url, "LOTLENS_CLIENT_KEY": gateway.key}
    done = subprocess.run([sys.executable, "-m", "lotlens_client.cli", "retry-failed", job_id], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["job_id"] == accepted.job_id and printed["retry_of"] == job_id


def test_asking_again_while_the_retry_is_being_made_or_after_is_not_counted_against_the_batch_limit(
        settings: ServiceSettings, engine: Engine) -> None:
    # One batch request a minute; two intake slots, as two replicas would take the two calls.
    with running_gateway(settings, engine, rate_limit_batch=1, intake_slots=2) as gateway:
        job_id, _failed = finished_job_with_failures(gateway, engine)
        with ThreadPoolExecutor(1) as pool, engine.connect() as holder:
            # The first call's job write waits on the outbox (a slow commit); its client times out.
            holder.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))
            first = pool.submit(retry, gateway, job_id)
            until(lambda: waiting_on_a_lock(engine, "COPY outbox") > 0, first,
                  "the retry's write to wait")
            again = retry(gateway, job_id)  # the client asks again meanwhile
            holder.commit()
            made = first.result(timeout=30)
        later = retry(gateway, job_id)

    # The call asking again is told the retry is being made, as a submission's replay is: counted,
    # it was refused 429 (the minute's one batch request was the first call's).
    assert (again.status_code, again.json()["code"]) == (409, "IDEMPOTENCY_KEY_IN_PROGRESS"), again.text
    assert again.headers["retry-after"] == "5"
    assert made.status_code == 201, made.text
    assert (later.status_code, later.json()["job_id"]) == (200, made.json()["job_id"]), later.text


def test_a_retry_refused_for_the_batch_limit_leaves_its_key_free(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, rate_limit_batch=1) as gateway:
        job_id, _failed = finished_job_with_failures(gateway, engine)
        assert gateway.submit(make_lots(2)).status_code == 201  # the minute's one batch request
        refused = retry(gateway, job_id)
        with engine.connect() as conn:
            held = conn.execute(select(idempotency_keys.c.key).where(
                idempotency_keys.c.client_id == gateway.client_id)).scalars().all()
    assert (refused.status_code, refused.json()["code"]) == (429, "RATE_LIMIT_EXCEEDED"), refused.text
    # Reserved before it was counted, and released with the 429: held, the next call in the
    # minute after would have been told 409 in progress, for a retry nobody was making.
    assert held == []


def test_asking_again_for_a_made_retry_answers_it_while_every_intake_slot_is_taken(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, intake_slots=1, intake_wait_s=1.0, max_lot_bytes=2000) as gateway:
        job_id, _failed = finished_job_with_failures(gateway, engine)
        made = retry(gateway, job_id)
        assert made.status_code == 201, made.text
        with intake_filled(gateway, engine) as taking:
            again = retry(gateway, job_id)
        taken = taking.result()

    # Only reading the retry it names, the call was refused 503 INTAKE_BUSY with the big job's.
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == made.json()["job_id"] and again.headers["idempotent-replayed"] == "true"
    assert taken.status_code == 201, taken.text


def test_a_retry_that_will_be_refused_takes_no_intake_slot_and_reads_no_lot(
        settings: ServiceSettings, engine: Engine) -> None:
    # The slot was taken, and every failed lot's image URLs and notes read, before the job's
    # owner and state were looked at: a client looping on its own running job (or made-up ids,
    # counted as polls) kept the process's one slot busy and other clients' jobs got 503.
    with running_gateway(settings, engine, intake_slots=1, intake_wait_s=1.0, max_lot_bytes=2000) as gateway:
        running = insert_running_job(engine, gateway.client_id, status="processing")
        with engine.begin() as conn:
            conn.execute(insert(lots), [{"job_id": running, "lot_id": f"lot-{n}", "seq": n,
                                         "status": "failed", "image_urls": ["https://img.example.com/a.jpg"]}
                                        for n in range(3)])
        clean = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
        strangers, _failed = finished_job_with_failures(gateway, engine)
        statements = executed(Engine, lambda: [retry(gateway, running), retry(gateway, clean)])
        with intake_filled(gateway, engine) as taking:
            answers = {"running": retry(gateway, running), "clean": retry(gateway, clean),
                       "stranger's": retry(gateway, strangers, key=gateway.other_key),
                       "made up": retry(gateway, "job-does-not-exist")}
        assert taking.result().status_code == 201
    assert not [statement for statement, _ in statements if "FROM lots" in statement]
    codes = {name: (answer.status_code, answer.json()["code"]) for name, answer in answers.items()}
    assert codes == {"running": (409, "JOB_NOT_FINISHED"), "clean": (409, "NO_FAILED_LOTS"),
                     "stranger's": (404, "JOB_NOT_FOUND"), "made up": (404, "JOB_NOT_FOUND")}


def test_a_client_key_spelled_like_the_retry_s_own_neither_blocks_the_retry_nor_is_refused_for_it(
        gateway: Gateway, engine: Engine) -> None:
    # The retry held `retry-failed:<job id>` among the client's own Idempotency-Keys: a submission
    # sent with that key made the job's retry a 409 IDEMPOTENCY_KEY_REUSED for a day, and a
    # submission sent with it after the retry was refused so.
    before, _failed = finished_job_with_failures(gateway, engine)
    lots, key = make_lots(2), {"Idempotency-Key": f"retry-failed:{before}"}
    submitted = gateway.submit(lots, headers=key)
    assert submitted.status_code == 201, submitted.text
    made = retry(gateway, before)
    assert made.status_code == 201 and made.json()["retry_of"] == before, made.text
    resent = gateway.submit(lots, headers=key)
    assert resent.status_code == 201 and resent.json() == submitted.json(), resent.text

    after, _failed = finished_job_with_failures(gateway, engine)
    assert retry(gateway, after).status_code == 201
    later = gateway.submit(make_lots(2), headers={"Idempotency-Key": f"retry-failed:{after}"})
    assert later.status_code == 201 and later.json()["job_id"] not in (before, after), later.text


def old_release_reservation(engine: Engine, gateway: Gateway, job_id: str,
                            answer: dict[str, Any] | None) -> None:
    """The row a gateway of the release before 3c80d98 keeps while it makes `job_id`'s retry
    (`answer` None) or once it made it: its key was `retry-failed:<job id>`."""
    with engine.begin() as conn:
        conn.execute(insert(idempotency_keys).values(
            client_id=gateway.client_id, key=f"retry-failed:{job_id}", request_hash=retry_job_id(job_id),
            status_code=201 if answer else None, response_body=answer, created_at=datetime.now(UTC)))


def retries_written(engine: Engine, job_id: str) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(outbox.c.id).where(
            outbox.c.job_id == retry_job_id(job_id), outbox.c.event_type == JobSubmitted.event_type)).all())


@pytest.mark.parametrize("made", [False, True], ids=["being-made", "made"])
def test_a_retry_a_gateway_of_the_earlier_release_holds_is_not_written_again(
        gateway: Gateway, engine: Engine, made: bool) -> None:
    # During a rolling upgrade an old gateway reserved `retry-failed:<job id>` and this one
    # `retry-failed\n<job id>`: a call to each wrote the retry twice.
    job_id, _failed = finished_job_with_failures(gateway, engine)
    answer = {"job_id": retry_job_id(job_id), "status": "accepted", "retry_of": job_id} if made else None
    old_release_reservation(engine, gateway, job_id, answer)
    called = retry(gateway, job_id)
    if made:
        assert (called.status_code, called.json()) == (200, answer), called.text
        assert called.headers["idempotent-replayed"] == "true"
    else:
        assert called.status_code == 409, called.text
        assert called.json()["code"] == "IDEMPOTENCY_KEY_IN_PROGRESS"
    assert retries_written(engine, job_id) == 0


def test_a_retry_a_gateway_of_the_earlier_release_starts_while_this_one_writes_is_left_to_it(
        gateway: Gateway, engine: Engine) -> None:
    job_id, _failed = finished_job_with_failures(gateway, engine)
    with ThreadPoolExecutor(1) as pool, engine.connect() as holder:
        holder.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))
        called = pool.submit(retry, gateway, job_id)
        until(lambda: waiting_on_a_lock(engine, "COPY outbox") > 0, called, "the retry's write to wait")
        old_release_reservation(engine, gateway, job_id, None)  # the old gateway's call begins
        holder.commit()
        answer = called.result(timeout=30)
    # Written, the old gateway's call wrote the same job again once its own write came.
    assert answer.status_code == 409 and answer.json()["code"] == "IDEMPOTENCY_KEY_IN_PROGRESS", answer.text
    assert retries_written(engine, job_id) == 0
