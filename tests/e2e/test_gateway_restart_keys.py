"""A client's retry under its Idempotency-Key after its gateway stopped (a rolling restart) or
died with its request in hand: the retry to the next gateway gets the first answer, or makes the
one job, at once; never a second paid description. The gateway runs alone as a process."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine, func, select, text

from lotlens_common.settings import TopicSettings
from lotlens_common.tables import idempotency_keys
from tests.conftest import Infra, new_id
from tests.e2e.harness import Stack
from tests.e2e.stopping import (
    EXIT_WITHIN_S,
    body,
    errors_in,
    in_background,
    job_of,
    jobs_of,
    log_since,
    lone_gateway,
    records,
    restarted,
    sigterm,
    wait_until_waiting,
)
from tests.polling import wait_for
from tests.standin import Standin, serve_standin

pytestmark = pytest.mark.e2e

# The model's answer takes longer than the drain (`DRAIN_S`): the lot is still being described
# when the drain ends.
MODEL_LATENCY_S = 6.0
# A job's Idempotency-Key reservation is taken over after this (LOTLENS_IDEMPOTENCY_JOB_LEASE_S).
JOB_LEASE_S = 2.0


@pytest.fixture()
def slow_model(tmp_path: Path) -> Iterator[Standin]:
    """An OpenAI stand-in whose direct answers take `MODEL_LATENCY_S`."""
    with serve_standin(tmp_path / "standin", latency_seconds=MODEL_LATENCY_S) as standin:
        yield standin


def paid_calls(standin: Standin) -> int:
    """Direct model calls the stand-in received (each one paid for)."""
    return sum(standin.stats()["direct_calls"].values())


def said_not_ready(gw: Stack, answering: threading.Thread) -> bool:
    """Whether the gateway's `/readyz` said it takes no work before the request was answered."""
    while answering.is_alive():
        try:
            ready = httpx2.get(f"http://127.0.0.1:{gw.ops_ports['gateway']}/readyz", timeout=5)
        except httpx2.TransportError:  # the process has ended
            return False
        if ready.status_code == 503:
            return True
        time.sleep(0.1)
    return False


def test_a_lot_being_described_when_its_gateway_stops_is_answered_and_its_retry_pays_nothing_more(
        infra: Infra, stack_engine: Engine, topics: TopicSettings, tmp_path: Path, images: str,
        slow_model: Standin) -> None:
    # Cut when the drain ended (30 s, against up to 290 s for a lot), its model call was paid for
    # and its key released: the client's retry described the lot again and paid again, on every
    # rolling restart.
    with lone_gateway(infra, stack_engine, topics, tmp_path, OPENAI_BASE_URL=slow_model.base_url) as gateway:
        lots = [{"lot_id": new_id("slow"), "additional_info": "2019 Toyota Camry",
                 "images": [{"url": f"{images}/car1.png"}]}]
        submission, key = body(gateway, lots), {"Idempotency-Key": str(uuid.uuid4())}
        thread, answers = in_background(lambda: httpx2.post(
            f"{gateway.url}/api/v1/generate-descriptions", json=submission, headers=key,
            timeout=EXIT_WITHIN_S))

        def in_its_model_call() -> int:
            if calls := paid_calls(slow_model):
                return calls
            assert thread.is_alive(), f"answered before reaching the model: {answers}"
            return 0

        wait_for(in_its_model_call, lambda: f"the lot to reach the model: {answers}")
        process, written = sigterm(gateway)
        stopped_taking_work = said_not_ready(gateway, thread)
        thread.join(EXIT_WITHIN_S)
        code = process.wait(EXIT_WITHIN_S)
        logged = records(log_since(gateway, written))
        restarted(gateway)
        retry = httpx2.post(f"{gateway.url}/api/v1/generate-descriptions", json=submission, headers=key,
                            timeout=EXIT_WITHIN_S)
    [first] = answers
    seen = (first.status_code, first.text) if isinstance(first, httpx2.Response) else (repr(first), "")
    # Answered, and replayed to the retry: one paid model call in all.
    assert (seen[0], retry.status_code, retry.headers.get("idempotent-replayed"), paid_calls(slow_model)) == \
        (200, 200, "true", 1), (seen, retry.text)
    assert first.json()["lots"][0]["status"] == "completed" and retry.json() == first.json(), seen
    assert (code, errors_in(logged)) == (0, []), gateway.log_tail("gateway")
    # Not ready while it finished the lot: new work went to the other replicas.
    assert stopped_taking_work


def lease_over(engine: Engine, client_id: str, key: str) -> bool:
    """Whether the key's reservation has not been renewed for a job's lease (its request renews
    it while it lives, key_lease.py)."""
    last_renewed = func.coalesce(idempotency_keys.c.renewed_at, idempotency_keys.c.created_at)
    with engine.connect() as conn:
        return bool(conn.execute(select(last_renewed < func.now() - timedelta(seconds=JOB_LEASE_S)).where(
            idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key)).scalar_one())


def test_a_job_s_key_left_by_a_gateway_killed_mid_intake_is_free_again_after_the_job_lease(
        infra: Infra, stack_engine: Engine, topics: TopicSettings, tmp_path: Path) -> None:
    # A job's key was held for the synchronous lease (350 s): after a crash between its reservation
    # and its write, every resend heard 409 IDEMPOTENCY_KEY_IN_PROGRESS for about 6 minutes (the
    # SDK gives up after about 11 s) though nothing had been written.
    lease = {"LOTLENS_IDEMPOTENCY_JOB_LEASE_S": str(JOB_LEASE_S)}
    with lone_gateway(infra, stack_engine, topics, tmp_path, **lease) as gateway:
        lots = [{"lot_id": new_id("crash"), "additional_info": "Car",
                 "images": [{"url": "http://127.0.0.1:9/a.png"}]} for _ in range(2)]
        submission, key = body(gateway, lots), str(uuid.uuid4())
        with stack_engine.connect() as holder:
            # The job's write waits on the outbox after its key's reservation; the gateway dies there.
            holder.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))
            thread, answers = in_background(lambda: httpx2.post(
                f"{gateway.url}/api/v1/generate-descriptions", json=submission,
                headers={"Idempotency-Key": key}, timeout=EXIT_WITHIN_S))
            wait_until_waiting(stack_engine, "COPY outbox", answers)
            process, _ = sigterm(gateway, signal.SIGKILL)
            process.wait(EXIT_WITHIN_S)
            holder.rollback()
        thread.join(EXIT_WITHIN_S)
        restarted(gateway, **lease)
        wait_for(lambda: lease_over(stack_engine, gateway.client_id, key), "the reservation to age",
                 every_s=0.1)
        resend = httpx2.post(f"{gateway.url}/api/v1/generate-descriptions", json=submission,
                             headers={"Idempotency-Key": key}, timeout=30)
        again = httpx2.post(f"{gateway.url}/api/v1/generate-descriptions", json=submission,
                            headers={"Idempotency-Key": key}, timeout=30)
    with stack_engine.connect() as conn:
        written = jobs_of(conn, gateway.client_id)
    assert (resend.status_code, [job_of(resend)]) == (201, written), resend.text
    assert (again.status_code, again.headers.get("idempotent-replayed"), job_of(again)) == \
        (201, "true", written[0]), again.text
