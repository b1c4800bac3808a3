"""The stage a running job reports through the gateway's batch-status, as the result-store projects
the stages' events: a job whose every unfinished lot waits for translation is `translating`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.gateway_support import Gateway
from tests.integration.result_store.support import Apply, job_script

pytestmark = pytest.mark.integration

STATUS = "/api/v1/batch-status/{job_id}"


def status_of(gateway: Gateway, job_id: str) -> dict[str, Any]:
    response = gateway.get_job(STATUS, job_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_job_whose_lots_all_passed_vision_reports_translation_before_any_translation_batch(
        gateway: Gateway, apply: Apply) -> None:
    # The translator is stopped: no translation batch exists, every lot waits for translation.
    script = job_script(3, client_id=gateway.client_id)
    apply(script.submissions)
    apply(script.vision)
    body = status_of(gateway, script.job_id)
    assert (body["status"], body["processing_details"]["current_stage"]) == ("translating", "translation")
    assert body["processing_details"]["translation_batch_ids"] == []
    assert body["progress"]["processed_lots"] == 0


def test_a_lot_failed_at_vision_leaves_the_others_translating(gateway: Gateway, apply: Apply) -> None:
    script = job_script(3, failed=[1], client_id=gateway.client_id)
    apply(script.submissions + script.vision)
    body = status_of(gateway, script.job_id)
    assert (body["status"], body["processing_details"]["current_stage"]) == ("translating", "translation")
    assert body["progress"]["failed_lots"] == 1


def test_a_job_with_a_lot_still_in_vision_stays_in_vision_analysis(gateway: Gateway, apply: Apply) -> None:
    script = job_script(3, client_id=gateway.client_id)
    apply(script.submissions)
    apply(script.vision[:-1])  # the batch and two of the three lots' results
    body = status_of(gateway, script.job_id)
    assert (body["status"], body["processing_details"]["current_stage"]) == ("processing", "vision_analysis")
    apply(script.vision[-1:])
    assert status_of(gateway, script.job_id)["status"] == "translating"
    apply(script.translation)
    assert status_of(gateway, script.job_id)["status"] == "completed"
