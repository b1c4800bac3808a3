"""A synchronous lot's budget (API.md: answered within 300 s) through a real gateway and the
OpenAI stand-in: the contract's own 502/504 comes within it, whatever OpenAI or PostgreSQL does.
Budgets are a few seconds and faults the stand-in's, so nothing here times the gateway."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import RESERVING, running_gateway, until
from tests.integration.lock_waits import waiting_on_a_lock
from tests.integration.sync_support import model_calls, one_lot
from tests.standin import Standin, serve_standin

pytestmark = pytest.mark.integration


def test_a_rate_limit_asking_a_wait_past_the_budget_is_502_at_once_with_its_retry_after(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str) -> None:
    # OpenAI asked for 30 s; the gateway slept it inside a budget of 3 s and answered 504
    # OPENAI_TIMEOUT without a Retry-After, though OpenAI's answer said when to come back. (30 s:
    # within what the retry loop waits at all, so the budget is what refuses it.)
    standin.faults(api_faults=[{"scope": "responses", "kind": "rate_limit", "count": 3}], retry_after_s=[30])
    with running_gateway(settings, engine, model_url=standin.base_url, sync_timeout_s=3.0) as gw:
        response = gw.submit(one_lot(images), languages=["en"])
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == "OPENAI_UNAVAILABLE" and body["details"]["openai_error"] == "rate_limited"
    assert response.headers["retry-after"] == "30" and body["details"]["retry_after"] == 30
    assert model_calls(standin) == 1  # nothing asked again: the wait could not fit


def test_a_rate_limit_asking_a_wait_within_the_budget_is_asked_again(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str) -> None:
    standin.faults(api_faults=[{"scope": "responses", "kind": "rate_limit", "count": 1}], retry_after_s=[0.2])
    with running_gateway(settings, engine, model_url=standin.base_url, sync_timeout_s=60.0) as gw:
        response = gw.submit(one_lot(images), languages=["en"])
    assert response.status_code == 200, response.text
    assert response.json()["lots"][0]["status"] == "completed" and model_calls(standin) == 2


def test_time_the_request_spent_before_the_model_counts_towards_its_budget(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str) -> None:
    # The budget started with the model calls: a request held up before them (here, its
    # Idempotency-Key's reservation waiting on a lock) still got the whole budget after, and its
    # answer came after the integrator's 300 s timeout (003's client, nginx's proxy_read_timeout).
    budget_s = 1.0
    with running_gateway(settings, engine, model_url=standin.base_url, sync_timeout_s=budget_s) as gw, \
            ThreadPoolExecutor(1) as pool, engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE idempotency_keys IN SHARE ROW EXCLUSIVE MODE"))
        sending = pool.submit(gw.submit, one_lot(images), ["en"], headers={"Idempotency-Key": "held-1"})
        until(lambda: waiting_on_a_lock(engine, RESERVING) == 1, sending,
              "the reservation to wait on the lock")
        time.sleep(budget_s * 1.5)  # the budget is spent while the request waits
        blocker.rollback()
        response = sending.result(timeout=60)
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "OPENAI_TIMEOUT"
    assert model_calls(standin) == 0  # no model call begun that nobody would wait for


def test_a_model_slower_than_the_clients_timeout_but_within_the_budget_is_waited_for(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path) -> None:
    # `OPENAI_TIMEOUT_S` (120 s) ended every call, and a timeout is not asked again: 9 languages
    # of a 3 KB text (100-190 s of output) always came back 504 "did not answer within the 290 s
    # budget". Here the client's timeout is 0.5 s, the model takes 1.5 s, the budget is 60 s.
    with serve_standin(tmp_path, latency_seconds=1.5) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url, sync_timeout_s=60.0,
                            model_timeout_s=0.5) as gw:
        response = gw.submit(one_lot(images), languages=["en", "de"])
    assert response.status_code == 200, response.text
    assert response.json()["lots"][0]["status"] == "completed"


def test_a_description_cut_off_late_in_the_budget_fails_the_lot_without_a_second_call(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path) -> None:
    # A description cut off at its output budget is asked again with twice the room; sent with the
    # 1.5 s left of 5 s after a first call of 3.5 s, it ran out of time: a retryable 504 whose
    # retries paid for the images again, instead of the lot failed with its reason and usage.
    with serve_standin(tmp_path, latency_seconds=3.5) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url, sync_timeout_s=5.0) as gw:
        response = gw.submit(one_lot(images, notes="cut short [standin:incomplete]"), languages=["en"])
        calls = model_calls(slow)
    assert response.status_code == 200, response.text
    lot = response.json()["lots"][0]
    assert lot["status"] == "failed" and lot["processed_images"] == 0
    assert lot["error_message"] == (
        "the model could not describe the lot: the response is incomplete (max_output_tokens)")
    assert lot["usage"]["output_tokens"] > 0 and lot["usage"]["estimated_cost_usd"] > 0
    assert calls == 1
