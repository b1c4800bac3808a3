"""A model answering with hostile markup: what is stored, returned and sent by webhook is clean."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, select

from lotlens_common.model.html_text import already_clean
from lotlens_common.signing import sign
from lotlens_common.tables import descriptions
from tests.conftest import new_id
from tests.e2e.harness import Stack
from tests.polling import wait_for
from tests.servers import WebhookReceiver

pytestmark = pytest.mark.e2e

# The stand-in appends <script>, <img onerror>, <a href="javascript:…"> and <b onclick> to its
# vision answer when the lot's notes hold this marker.
MARKER = "standin:hostile-html"
FORBIDDEN = ("<script", "alert(", "<img", "onerror", "javascript:", "<a ", "onclick", "href", "lang=",
             "title=")


def assert_clean(html: str) -> None:
    assert not any(bad in html.lower() for bad in FORBIDDEN), html
    # Every tag closed where it opened: an unclosed <b> or <ul> runs on into the integrator's page.
    assert already_clean(html), html
    assert "<b>bold</b>" in html and "details" in html  # allowed tags and text are kept


def submit(stack: Stack, lots: list[dict[str, Any]]) -> httpx2.Response:
    signature = sign(stack.client_key, json.dumps(lots, separators=(",", ":"), sort_keys=True).encode())
    return httpx2.post(f"{stack.url}/api/v1/generate-descriptions", timeout=120,
                      json={"signature": signature, "languages": ["en", "de"], "lots": lots})


def results_when_done(stack: Stack, job_id: str, seconds: float) -> httpx2.Response:
    """`batch-results` of the job once it answers 200; after `seconds` the wait fails with its last
    answer and the end of the translator's log."""
    signed = {"X-Signature": sign(stack.client_key, job_id.encode())}
    answers: list[httpx2.Response] = []
    # One client for the polls: `httpx2.get` loads the CA bundle per call (~50 ms CPU).
    with httpx2.Client(headers=signed, timeout=30, trust_env=False) as http:
        def done() -> bool:
            answers.append(http.get(f"{stack.url}/api/v1/batch-results/{job_id}"))
            return answers[-1].status_code == 200

        wait_for(done, lambda: f"the job's results (last answer: {answers[-1].text}); the translator said: "
                 f"{stack.log_tail('translator')}", timeout_s=seconds, every_s=0.2)
    return answers[-1]


def test_hostile_model_markup_is_sanitised_in_storage_results_webhooks_and_sync_answers(
        stack: Stack, stack_engine: Engine, images: str, receiver: WebhookReceiver) -> None:
    prefix = new_id("xss")
    lots = [{"lot_id": f"{prefix}-{i}", "additional_info": f"Car {i} {MARKER}",
             "images": [{"url": f"{images}/{prefix}-{i}.png"}], "webhook": f"{receiver.url}/hooks"}
            for i in range(2)]
    accepted = submit(stack, lots)
    assert accepted.status_code == 201, accepted.text
    job_id = accepted.json()["job_id"]
    results = results_when_done(stack, job_id, 120)
    assert results.status_code == 200, results.text
    returned = [d["damages"] for lot in results.json()["results"]["lots"] for d in lot["descriptions"]]
    assert len(returned) == 4
    for html in returned:
        assert_clean(html)

    with stack_engine.connect() as conn:
        stored = conn.execute(select(descriptions.c.damages).where(descriptions.c.job_id == job_id)).scalars()
        for html in stored:
            assert_clean(html)

    wait_for(lambda: receiver.received, lambda: f"the job's webhook: {stack.log_tail('webhook-dispatcher')}",
             timeout_s=60, every_s=0.2)
    sent = json.loads(receiver.received[0].body)
    for lot in sent["lots"]:
        for description in lot["descriptions"]:
            assert_clean(description["damages"])

    one = submit(stack, [{**lots[0], "lot_id": f"{prefix}-sync", "webhook": None}])
    assert one.status_code == 200, one.text
    for description in one.json()["lots"][0]["descriptions"]:
        assert_clean(description["damages"])


def test_a_model_answer_with_a_nul_character_completes_its_lot_without_it(
        stack: Stack, stack_engine: Engine, images: str) -> None:
    # JSON carries "\u0000" and a model may write it; PostgreSQL text cannot hold it. The NUL
    # reached the translator, whose work table (jsonb) refused it: the VisionCompleted was
    # dead-lettered and the lot never completed. Other control characters have
    # no place in an integrator's page (nor in XML) and go too.
    prefix = new_id("nul")
    lots = [{"lot_id": f"{prefix}-{i}", "additional_info": f"Car {i} standin:control-characters",
             "images": [{"url": f"{images}/{prefix}-{i}.png"}]} for i in range(2)]
    accepted = submit(stack, lots)
    assert accepted.status_code == 201, accepted.text
    results = results_when_done(stack, accepted.json()["job_id"], 90)
    assert results.status_code == 200, (results.text, stack.log_tail("translator"))
    lots_back = results.json()["results"]["lots"]
    assert sorted(lot["status"] for lot in lots_back) == ["completed", "completed"]
    english = [d["damages"] for lot in lots_back for d in lot["descriptions"] if d["language"] == "en"]
    clean = "<p>Standin vision: 1 image(s) reviewed. Car {} standin:control-characters</p>"
    assert sorted(english) == [clean.format(0), clean.format(1)]

    one = submit(stack, [{**lots[0], "lot_id": f"{prefix}-sync"}])
    assert one.status_code == 200, one.text
    [english_sync] = [d["damages"] for d in one.json()["lots"][0]["descriptions"] if d["language"] == "en"]
    assert english_sync == clean.format(0)
