"""A batch job through the whole stack, driven only over HTTP with the integrators' own client."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
import standardwebhooks
from sqlalchemy import Engine, func, select

from lotlens_client import LotLensClient
from lotlens_common import webhook_secrets
from lotlens_common.events import JobCompleted
from lotlens_common.model.settings import DEFAULT_PRICES
from lotlens_common.signing import sign
from lotlens_common.tables import descriptions, jobs, lots
from lotlens_openai_standin.scripts import in_script
from tests.conftest import new_id
from tests.e2e.harness import Stack
from tests.e2e.workload import cars
from tests.events import read_to_end
from tests.polling import wait_for
from tests.seeds import seed_client_class, seed_webhook_verifier
from tests.servers import WebhookReceiver
from tests.stack_health import wait_healthy
from tests.standin import description

pytestmark = pytest.mark.e2e

LANGUAGES = ["en", "de", "pt-BR", "zh-Hant"]


def expected_english(i: int) -> str:
    # The stand-in's documented deterministic answer: images seen, the lot's notes, then a real
    # description's paragraphs and list.
    return description(2 if i != 1 else 1, f"Car {i}, front collision")


def wait_for_deliveries(stack: Stack, job_id: str, headers: dict[str, str], count: int,
                        seconds: float = 30) -> list[dict[str, Any]]:
    """The job's delivery records once `count` of them are delivered (projection is asynchronous)."""
    def delivered() -> list[dict[str, Any]]:
        answer = httpx2.get(f"{stack.url}/api/v1/batch-jobs/{job_id}/webhooks", headers=headers)
        assert answer.status_code == 200, answer.text
        deliveries: list[dict[str, Any]] = answer.json()["deliveries"]
        return deliveries if sum(d["status"] == "delivered" for d in deliveries) >= count else []

    return wait_for(delivered, f"{count} of the job's deliveries delivered", timeout_s=seconds, every_s=0.2)


def assert_usage_and_cost(results: dict[str, Any], by_lot: dict[str, Any], status: dict[str, Any]) -> None:
    """Tokens from the stand-in's answers, priced at the default list prices with the batch discount."""
    usage = results["processing_summary"]["usage"]
    assert status["processing_details"]["usage"] == usage
    assert set(usage["by_model"]) == {"o4-mini", "gpt-4.1-mini"}
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["reasoning_tokens"] > 0
    expected = 0.0
    for model, part in usage["by_model"].items():
        price = DEFAULT_PRICES[model]
        fresh = part["input_tokens"] - part["cached_input_tokens"]
        expected += 0.5 * (fresh * price.input + part["cached_input_tokens"] * price.cached_input
                           + part["output_tokens"] * price.output) / 1e6
    assert usage["estimated_cost_usd"] == pytest.approx(expected)
    assert sum(lot["usage"]["input_tokens"] for lot in by_lot.values()) == usage["input_tokens"]


def assert_no_files_left_at_openai(stack: Stack, job_id: str) -> None:
    """Every file of the job's batches (requests, answers, errors) is deleted once collected:
    kept, signed image URLs and descriptions stayed at OpenAI for 30 days."""
    auth = {"Authorization": "Bearer e2e-standin"}
    listed = httpx2.get(f"{stack.standin_url}/v1/batches", params={"limit": 100}, headers=auth, timeout=30)
    batches = [b for b in listed.json()["data"] if b["metadata"].get("lotlens_job_id") == job_id]
    assert len(batches) >= 2  # vision, translation
    keys = ("input_file_id", "output_file_id", "error_file_id")
    files = [b[key] for b in batches for key in keys if b[key]]

    # One client for the polls: `httpx2.get` loads the CA bundle per call (~50 ms CPU each file).
    with httpx2.Client(base_url=stack.standin_url, headers=auth, timeout=30, trust_env=False) as http:
        def statuses() -> dict[str, int]:
            return {f: http.get(f"/v1/files/{f}").status_code for f in files}

        # The last collection deletes them as the job completes.
        wait_for(lambda: statuses() == dict.fromkeys(files, 404), lambda: f"every file deleted: {statuses()}",
                 timeout_s=15, every_s=0.1)


def test_a_three_lot_job_completes_with_every_language_by_polling_and_by_webhook(
        stack: Stack, images: str, receiver: WebhookReceiver, stack_engine: Engine) -> None:
    client = seed_client_class()(stack.url, stack.client_key)
    prefix = new_id("lot")
    job_id, error = client.batch_generate(cars(images, 3, prefix), languages=LANGUAGES,
                                          webhook_url=f"{receiver.url}/hooks")
    assert error is None, error
    seen: list[dict[str, Any]] = []
    results, error = client.poll_for_completion(job_id, poll_interval=0.5, max_wait_time=120,
                                                progress_callback=seen.append)
    assert error is None, error
    assert seen and seen[-1]["status"] == "completed"
    assert results["processing_summary"]["processed_lots"] == 3
    assert results["processing_summary"]["failed_lots"] == 0
    by_lot = {lot["lot_id"]: lot for lot in results["results"]["lots"]}
    for i in range(3):
        lot = by_lot[f"{prefix}-{i}"]
        english = expected_english(i)
        assert lot["status"] == "completed"
        assert [d["language"] for d in lot["descriptions"]] == LANGUAGES
        assert lot["descriptions"][0]["damages"] == english
        inner = english.removeprefix("<p>").removesuffix("</p>")
        assert lot["descriptions"][1]["damages"] == f"<p>[de] {inner}</p>"
        assert lot["descriptions"][2]["damages"] == f"<p>[pt-BR] {inner}</p>"
        assert lot["descriptions"][3]["damages"] == f"<p>[zh-Hant] {in_script('zh-Hant', inner)}</p>"
    assert by_lot[f"{prefix}-1"]["missing_images"] == [f"{images}/{prefix}-1-missing.png"]
    assert by_lot[f"{prefix}-1"]["processed_images"] == 1
    assert_usage_and_cost(results, by_lot, client.get_job_status(job_id)[0])
    assert_no_files_left_at_openai(stack, job_id)

    wait_for(lambda: receiver.received, "the webhook", every_s=0.1)
    assert len(receiver.received) == 1
    hook = receiver.received[0]
    verify = seed_webhook_verifier()
    assert verify(hook.body.decode("utf-8"), hook.headers["x-signature"], stack.client_key)
    with stack_engine.connect() as conn:  # the secret the gateway made at start-up
        secret = webhook_secrets.live(conn, stack.client_id, datetime.now(UTC))[0]
    assert standardwebhooks.Webhook(secret).verify(hook.body, hook.headers)["job_id"] == job_id
    payload = json.loads(hook.body)
    assert payload["event"] == "batch_job_completed"
    assert payload["job_id"] == job_id and payload["status"] == "completed"
    assert hook.headers["x-job-id"] == job_id
    assert hook.headers["user-agent"] == "Generation-Service/2.0"
    assert {lot["lot_id"] for lot in payload["lots"]} == set(by_lot)
    assert payload["processing_summary"]["usage"] == results["processing_summary"]["usage"]

    # The customer asks for the webhook again: a new delivery, recorded with its attempt.
    headers = {"X-Signature": sign(stack.client_key, job_id.encode())}
    replay = httpx2.post(f"{stack.url}/api/v1/batch-jobs/{job_id}/webhooks/redeliver", headers=headers)
    assert replay.status_code == 202, replay.text
    wait_for(lambda: len(receiver.received) >= 2, "the webhook again", every_s=0.1)
    assert receiver.received[1].body == hook.body
    assert receiver.received[1].headers["webhook-id"] != hook.headers["webhook-id"]
    deliveries = wait_for_deliveries(stack, job_id, headers, count=2)
    assert [d["status"] for d in deliveries] == ["delivered", "delivered"]
    assert all(d["attempts"][0]["status_code"] == 200 for d in deliveries)


def test_killing_the_vision_batcher_at_a_fault_point_and_the_result_store_loses_and_duplicates_nothing(
        stack: Stack, images: str, stack_engine: Engine) -> None:
    # The vision-batcher dies right after OpenAI created its batch, before the batch id is on
    # record anywhere (the costliest moment to forget it); the result-store dies with it.
    stack.kill("vision-batcher")
    stack.start("vision-batcher", LOTLENS_FAULT_AT="vision.after_batch_created")
    client = seed_client_class()(stack.url, stack.client_key)
    prefix = new_id("crash")
    job_id, error = client.batch_generate(cars(images, 20, prefix), languages=["en", "de"])
    assert error is None, error
    assert stack.processes.pop("vision-batcher").wait(timeout=120) == -signal.SIGKILL
    stack.kill("result-store")
    stack.start("result-store")
    stack.start("vision-batcher")
    restarted = time.monotonic()
    results, error = client.poll_for_completion(job_id, poll_interval=0.5, max_wait_time=180)
    assert error is None, error
    print(f"completed {time.monotonic() - restarted:.1f} s after the restart")  # measured, not asserted
    assert results["processing_summary"]["processed_lots"] == 20
    with stack_engine.connect() as conn:
        lot_rows = conn.execute(select(func.count()).where(lots.c.job_id == job_id)).scalar_one()
        text_rows = conn.execute(
            select(func.count()).where(descriptions.c.job_id == job_id)).scalar_one()
    assert lot_rows == 20
    assert text_rows == 40
    created = httpx2.get(f"{stack.standin_url}/_standin/stats").json()["batch_metadata"]
    shards = [(b["lotlens_stage"], b["lotlens_shard_id"], b["lotlens_attempt"]) for b in created]
    assert shards and len(shards) == len(set(shards)), f"a shard's batch was created twice: {shards}"


def test_a_graceful_restart_of_every_service_mid_job_still_completes_it(
        stack: Stack, images: str, stack_engine: Engine) -> None:
    client = seed_client_class()(stack.url, stack.client_key)
    job_id, error = client.batch_generate(cars(images, 5, new_id("term")), languages=["en"])
    assert error is None, error
    # The result-store too, early in the job: restarted, it must neither lose nor repeat the
    # announcement. (Stops landing during the announcement itself are the seeded run of graceful
    # stops, in `make chaos`.)
    for name in ("translator", "webhook-dispatcher", "vision-batcher", "result-store"):
        stack.kill(name, signal.SIGTERM)
        stack.start(name)
    results, error = client.poll_for_completion(job_id, poll_interval=0.5, max_wait_time=120)
    assert error is None, error
    assert results["processing_summary"]["processed_lots"] == 5

    def acknowledged() -> bool:
        with stack_engine.connect() as conn:
            return bool(conn.execute(select(jobs.c.completion_published).where(jobs.c.job_id == job_id))
                        .scalar())

    # Announced and acknowledged: no copy can come after.
    wait_for(acknowledged, "the job's announcement to be acknowledged", timeout_s=60, every_s=0.2)
    announced = [envelope.job_id for envelope in read_to_end(stack.infra.kafka_bootstrap,
                                                             stack.topics.completions)
                 if isinstance(envelope.event, JobCompleted)]
    assert announced.count(job_id) == 1, announced


def test_a_jobs_failed_lots_are_retried_as_a_linked_job(stack: Stack, images: str) -> None:
    client = seed_client_class()(stack.url, stack.client_key)
    prefix = new_id("retry")
    lots_sent = cars(images, 3, prefix)
    lots_sent[2]["image_urls"] = [f"{images}/{prefix}-2-missing.png"]  # its only image is gone: it fails
    job_id, error = client.batch_generate(lots_sent, languages=["en", "de"])
    assert error is None, error
    results, error = client.poll_for_completion(job_id, poll_interval=0.5, max_wait_time=120)
    assert error is None, error
    assert results["processing_summary"]["failed_lots"] == 1

    headers = {"X-Signature": sign(stack.client_key, job_id.encode())}
    retried = httpx2.post(f"{stack.url}/api/v1/batch-jobs/{job_id}/retry-failed", headers=headers)
    assert retried.status_code == 201, retried.text
    new_id_ = retried.json()["job_id"]
    assert retried.json()["total_lots"] == 1 and retried.json()["retry_of"] == job_id
    again = httpx2.post(f"{stack.url}/api/v1/batch-jobs/{job_id}/retry-failed", headers=headers)
    assert again.status_code == 200 and again.json()["job_id"] == new_id_

    with LotLensClient(stack.url, stack.client_key) as sdk:
        # The image is still gone, so the lot fails again (every lot failed: the job failed).
        assert sdk.wait_for_job(new_id_, poll_interval_s=0.5, timeout_s=120).status == "failed"
        new_results = sdk.job_results(new_id_)
        assert new_results is not None and [lot.lot_id for lot in new_results.lots] == [f"{prefix}-2"]
        assert sdk.job_status(new_id_).retry_of == job_id
        assert sdk.job_status(job_id).retried_as == new_id_


def test_the_gateway_stops_cleanly_on_sigterm_after_a_synchronous_lot(stack: Stack, images: str) -> None:
    # Its image client was closed on a new event loop after uvicorn's had ended: SIGTERM ended in
    # "Event loop is closed", a non-zero exit and database pools never disposed.
    lots = [{"lot_id": new_id("stop"), "additional_info": "2019 Toyota Camry",
             "images": [{"url": f"{images}/stop-0.png"}]}]
    signature = sign(stack.client_key, json.dumps(lots, separators=(",", ":"), sort_keys=True).encode())
    answer = httpx2.post(f"{stack.url}/api/v1/generate-descriptions", timeout=120,
                         json={"signature": signature, "languages": ["en"], "lots": lots})
    assert answer.status_code == 200, answer.text
    log = stack.logs / "gateway.log"
    written = log.stat().st_size
    process = stack.processes.pop("gateway")
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=90) == 0, stack.log_tail("gateway")
        after = log.read_bytes()[written:].decode(errors="replace")
        assert "Traceback" not in after and "Event loop is closed" not in after, after
    finally:
        stack.start("gateway")
        wait_healthy(stack.url, stack.processes, stack.log_tail)
