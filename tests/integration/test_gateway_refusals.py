"""401/403 say what the contract signs for that endpoint, and nothing about any key.

The issue's cases: seed 004's listing recipe (it signs a job id) and its unsigned image
validation recipe, a wrong key on a job-addressed request, an unsigned or mis-signed submission.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx2
import pytest

from tests.integration.gateway_support import Gateway, make_lots

pytestmark = pytest.mark.integration


def refusal(response: httpx2.Response, status: int, code: str, gateway: Gateway) -> dict[str, Any]:
    """The error body; it never carries a key nor any signature the server computed."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert gateway.key not in response.text and gateway.other_key not in response.text
    assert body["details"]["signature_format"] == "`sha256=<hex>`, HMAC-SHA256 with your shared key"
    return body


def test_seed_004_listing_recipe_is_told_the_query_string_is_signed(gateway: Gateway) -> None:
    job_id = str(uuid.uuid4())
    query = "status=processing&limit=20"
    response = httpx2.get(f"{gateway.url}/api/v1/batch-jobs?{query}",
                         headers={"X-Signature": gateway.sign(job_id)})  # 1.x signed a job id
    body = refusal(response, 403, "INVALID_SIGNATURE", gateway)
    assert "raw query string" in body["message"] and "1.x signed a job id" in body["message"]
    assert body["details"]["signed_message_here"] == query
    assert body["details"]["signature_location"] == "an X-Signature header"
    assert gateway.sign(query) not in response.text
    unsigned = refusal(httpx2.get(f"{gateway.url}/api/v1/batch-jobs"), 401, "MISSING_SIGNATURE", gateway)
    assert "raw query string" in unsigned["message"] and unsigned["details"]["signed_message_here"] == ""


def test_seed_004_unsigned_image_validation_is_told_the_raw_body_is_signed(gateway: Gateway) -> None:
    raw = json.dumps({"urls": ["https://your-image-url.jpg"]}).encode()
    body = refusal(httpx2.post(f"{gateway.url}/api/v1/test-image-validation", content=raw,
                              headers={"Content-Type": "application/json"}),
                   401, "MISSING_SIGNATURE", gateway)
    assert "raw request body" in body["message"] and "1.x took this request unsigned" in body["message"]
    assert "signed_message_here" not in body["details"]  # the body is not echoed back


def test_job_addressed_requests_name_the_job_id_as_the_signed_message(gateway: Gateway) -> None:
    job_id = str(uuid.uuid4())
    for path in ("/api/v1/batch-status/{job_id}", "/api/v1/batch-results/{job_id}"):
        response = gateway.get_job(path, job_id, key="not-a-client-key")
        body = refusal(response, 403, "INVALID_SIGNATURE", gateway)
        assert "the job id exactly as in the path" in body["message"] and job_id in body["message"]
        assert body["details"]["signed_message_here"] == job_id
    cancel = httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{job_id}/cancel")
    assert "the job id" in refusal(cancel, 401, "MISSING_SIGNATURE", gateway)["message"]


def test_submissions_name_the_sorted_lots_array(gateway: Gateway) -> None:
    lots = make_lots(2)
    unsigned = httpx2.post(f"{gateway.url}/api/v1/generate-descriptions", json={"lots": lots})
    body = refusal(unsigned, 401, "MISSING_SIGNATURE", gateway)
    assert "sort_keys=True" in body["message"] and "`signature`" in body["details"]["signature_location"]
    wrong = gateway.submit(lots, key="not-a-client-key")
    body = refusal(wrong, 403, "INVALID_SIGNATURE", gateway)
    assert "`lots` array" in body["details"]["signed_message"]
