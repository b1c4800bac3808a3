"""A signature made for another call is refused before it is counted.

One shared key signs a client's job ids (every status poll), its raw test-image-validation bodies,
its listing queries, its `lots` arrays, and every webhook LotLens sends it (`X-Signature` over the
body, held by each webhook receiver). A captured one, replayed where its bytes are not that
endpoint's request, was authenticated, counted against the client's rate limit, then refused
400/422: each replay used up one of the client's own requests, and its real work got 429.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_webhook_dispatcher import payloads
from tests.integration.gateway_support import Gateway, make_lots, running_gateway

pytestmark = pytest.mark.integration

IMAGE_CHECK = "/api/v1/test-image-validation"
GENERATE = "/api/v1/generate-descriptions"


def webhook_body(job_id: str) -> bytes:
    """A webhook's exact bytes as the dispatcher writes and signs them (payloads.body)."""
    head = {"event": payloads.EVENT, "job_id": job_id, "status": "completed",
            "completed_at": "2025-08-05T07:30:00Z",
            "processing_summary": {"total_lots": 1, "processed_lots": 1, "failed_lots": 0}}
    lot = {"lot_id": "lot-1", "status": "completed", "processed_images": 1, "missing_images": [],
           "descriptions": [{"language": "en", "damages": "<p>Dent on the left door.</p>"}]}
    return payloads.body(head, [lot])


@pytest.fixture()
def one_a_minute_each(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway whose clients may make two synchronous and two batch requests a minute."""
    with running_gateway(settings, engine, rate_limit_sync=2, rate_limit_batch=2) as gw:
        yield gw


def error_code(response: httpx2.Response) -> tuple[int, str]:
    """The answer's status and error code."""
    body: dict[str, Any] = response.json()
    return response.status_code, body.get("code", "")


def check_images(gw: Gateway, images: str) -> httpx2.Response:
    """The client's own image check, signed over its body."""
    raw = json.dumps({"urls": [f"{images}/car-1.png"]}).encode()
    return httpx2.post(gw.url + IMAGE_CHECK, content=raw, headers={"X-Signature": gw.sign(raw)}, timeout=30)


def test_a_status_polls_signature_used_as_an_image_check_body_uses_no_synchronous_request(
        one_a_minute_each: Gateway, images: str) -> None:
    gw, job_id = one_a_minute_each, str(uuid.uuid4())
    replays = [error_code(httpx2.post(gw.url + IMAGE_CHECK, content=job_id.encode(),
                                      headers={"X-Signature": gw.sign(job_id)}, timeout=30))
               for _ in range(3)]
    assert replays == [(400, "INVALID_JSON")] * 3
    for _ in range(2):  # the client's own two checks of the minute are still there
        own = check_images(gw, images)
        assert own.status_code == 200, own.text


def test_a_webhooks_signature_used_as_an_image_check_body_uses_no_synchronous_request(
        one_a_minute_each: Gateway, images: str) -> None:
    gw = one_a_minute_each
    delivered = webhook_body(str(uuid.uuid4()))
    replays = [error_code(httpx2.post(gw.url + IMAGE_CHECK, content=delivered,
                                      headers={"X-Signature": gw.sign(delivered)}, timeout=30))
               for _ in range(3)]
    assert replays == [(422, "VALIDATION_ERROR")] * 3
    for _ in range(2):
        own = check_images(gw, images)
        assert own.status_code == 200, own.text


def test_an_image_check_body_that_is_not_urls_is_refused_before_its_signature_is_checked(
        gateway: Gateway) -> None:
    """Signed, rightly or not, a body that is no image check is told what is wrong with it (nothing
    secret); unsigned, it is the contract's 401 first, whatever the body."""
    for content, status, code in ((b"[1]", 400, "INVALID_JSON"), (b'{"urls": []}', 422, "VALIDATION_ERROR"),
                                  (b'{"urls": ["a", 1]}', 422, "VALIDATION_ERROR")):
        for signature in (gateway.sign(content), gateway.sign(b"another body")):
            answer = httpx2.post(gateway.url + IMAGE_CHECK, content=content,
                                 headers={"X-Signature": signature}, timeout=30)
            assert error_code(answer) == (status, code), (content, signature, answer.text)
        unsigned = httpx2.post(gateway.url + IMAGE_CHECK, content=content, timeout=30)
        assert error_code(unsigned) == (401, "MISSING_SIGNATURE"), (content, unsigned.text)


def test_a_submission_without_a_signature_is_401_whatever_its_lots(gateway: Gateway) -> None:
    for lots in (b'{"urls":["https://img.example.com/a.jpg"]}', b'"lots"', b"[]"):
        unsigned = httpx2.post(gateway.url + GENERATE, content=b'{"version":"1.0.0","lots":' + lots + b"}",
                               timeout=30)
        assert error_code(unsigned) == (401, "MISSING_SIGNATURE"), (lots, unsigned.text)
    no_lots = httpx2.post(gateway.url + GENERATE, content=b'{"version":"1.0.0"}', timeout=30)
    assert error_code(no_lots) == (401, "MISSING_SIGNATURE"), no_lots.text
    # Signed, by anyone: what is wrong with the body is said before any key is tried.
    wrongly_signed = httpx2.post(gateway.url + GENERATE, content=b'{"lots":{"a":1}}',
                                 headers={"X-Signature": gateway.sign(b"something else")}, timeout=30)
    assert error_code(wrongly_signed) == (422, "VALIDATION_ERROR"), wrongly_signed.text


def test_a_listing_without_a_signature_is_401_whatever_its_query(gateway: Gateway) -> None:
    query = str(uuid.uuid4())  # a job id as the query: not the listing's parameters
    unsigned = httpx2.get(f"{gateway.url}/api/v1/batch-jobs?{query}", timeout=30)
    assert error_code(unsigned) == (401, "MISSING_SIGNATURE"), unsigned.text
    signed = httpx2.get(f"{gateway.url}/api/v1/batch-jobs?{query}",
                        headers={"X-Signature": gateway.sign(query)}, timeout=30)
    assert error_code(signed) == (422, "VALIDATION_ERROR"), signed.text


@pytest.mark.parametrize("foreign", ["webhook", "image check"])
def test_a_signed_object_sent_as_lots_uses_no_batch_request(one_a_minute_each: Gateway, foreign: str) -> None:
    # The `lots` of a submission is signed serialised compactly, keys sorted or as typed: exactly
    # the bytes of a webhook (orjson, compact) or of a JavaScript client's image check
    # (JSON.stringify), so their X-Signature authenticated `{"lots": <that object>}`.
    gw = one_a_minute_each
    signed = (webhook_body(str(uuid.uuid4())) if foreign == "webhook"
              else b'{"urls":["https://img.example.com/a.jpg"]}')
    replay = b'{"signature":"' + gw.sign(signed).encode() + b'","lots":' + signed + b"}"
    answers = [error_code(httpx2.post(gw.url + GENERATE, content=replay, timeout=30)) for _ in range(3)]
    assert answers == [(422, "VALIDATION_ERROR")] * 3
    for _ in range(2):  # the client's own two jobs of the minute are still there
        accepted = gw.submit(make_lots(2))
        assert accepted.status_code == 201, accepted.text
