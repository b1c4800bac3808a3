"""Operations on the API port: the contract's `/health` and the image URL check integrators use to
debug their lots. Metrics, probes and the detailed health are on the operations port (ops_port.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from lotlens_common.lookups import on_behalf_of
from lotlens_gateway import schemas
from lotlens_gateway.auth import SIGNS_BODY, client_for, signature_sent
from lotlens_gateway.body import parse_object, read_body
from lotlens_gateway.deps import Deps
from lotlens_gateway.errors import validation_failed
from lotlens_gateway.ops_port import health_report

router = APIRouter()
# A test request is small: a few hundred URLs at most.
_TEST_BODY_BYTES = 1024 * 1024
# The fields API.md lists for `GET /health`. The rest of the report (Kafka, the consumer groups,
# OpenAI's verdict on the service's key) is on the operations port alone (ops_port.py).
CONTRACT_HEALTH_FIELDS = ("status", "service", "timestamp", "version", "database", "background_worker")


@router.get("/health", tags=["operations"], response_model=schemas.Health,
            summary="PostgreSQL, Kafka and the pipeline's consumers",
            description=("Unsigned. 503 when PostgreSQL or Kafka does not answer. `background_worker` is "
                         "`running` when every pipeline service's consumer group has members, `degraded` "
                         "otherwise (jobs are accepted but wait); that alone does not make the answer 503. "
                         "The contract's fields only: the details are on the operations port."),
            responses={503: {"model": schemas.Health, "description": "PostgreSQL or Kafka is down"}})
async def health(deps: Deps) -> JSONResponse:
    """The contract's health answer: the state, without the details operators read on the ops port."""
    status, report = await health_report(deps)
    return JSONResponse({name: report[name] for name in CONTRACT_HEALTH_FIELDS}, status_code=status)


@router.post(
    "/api/v1/test-image-validation", tags=["operations"], response_model=schemas.ImageValidation,
    summary="Check image URLs the way lots' images are checked",
    description=(
        "Header-signed: `X-Signature: sha256=<hex>` HMAC-SHA256 over the raw request body bytes. "
        "Each URL gets HEAD (GET when HEAD does not tell): usable when it answers 2xx with an `image/*` "
        "type and at most 10 MB, through at most 3 redirects, on a public address. `threshold_met` is true "
        "when at least half of the URLs (and at least one) are usable. Holds a place among the "
        "synchronous lots' (past the client's places 429, past the gateway's 503, at once with "
        "`Retry-After`) and counts against the synchronous rate limit once signed; without "
        "`X-Signature` it is 401, and a body other than "
        "`{\"urls\": [strings]}` is 400 or 422 before its signature is checked, uncounted."),
    responses=schemas.error_responses(400, 401, 403, 408, 413, 422, 431, own={
        status: schemas.SUBMISSION_ERRORS[status] for status in (429, 503)}),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ImageValidationRequest"}}}}},
)
async def test_image_validation(
        request: Request, deps: Deps,
        x_signature: Annotated[str | None, Header(alias="X-Signature",
                                                  description="HMAC-SHA256 over the raw body")] = None,
) -> JSONResponse:
    """Which URLs are usable and which are not."""
    raw = await read_body(request, _TEST_BODY_BYTES, deps.settings.body_timeouts())
    signature_sent(x_signature, SIGNS_BODY)  # 401 first: the contract's, whatever the body
    urls = requested_urls(raw, deps.settings.max_test_image_urls)
    client_id = client_for(deps.keys, [raw], x_signature, SIGNS_BODY)
    # A place among the synchronous lots' (sync_slots.py), taken before the request is counted as
    # theirs is: without one, a client kept as many checks under way as it liked.
    async with deps.sync_slots.hold(client_id):
        await deps.count_request(client_id, "sync")
        with on_behalf_of(client_id):  # its image hosts' lookups and connections: this client's share
            check = await deps.describer.images.check(urls, deps.describer.http)
    valid = len(check.valid)
    return JSONResponse({
        "valid_urls": list(check.valid),
        "unreachable_urls": list(check.unreachable),
        "threshold_met": valid > 0 and 2 * valid >= valid + len(check.unreachable),
        "reasons": check.reasons,
    })


def requested_urls(raw: bytes, limit: int) -> list[str]:
    """The body's `urls`; 400/422 for any other body, before its signature is checked.

    One key signs a client's job ids, its bodies and every webhook it receives, and this body's
    signature is over its raw bytes: checked first, a status poll's signature sent with the job id
    as the body (or a webhook's with the webhook) was a valid signature, and each such replay used
    up one of the client's synchronous requests before its 400/422. No job id, query or webhook
    is an object with `urls`; and what a request gets wrong is no secret.
    """
    urls = parse_object(raw).get("urls")
    if not (isinstance(urls, list) and 0 < len(urls) <= limit and all(isinstance(u, str) for u in urls)):
        problem = {"field": "urls", "problem": "missing, empty, too long or not strings"}
        raise validation_failed(f"`urls` must be an array of 1 to {limit} strings", {"errors": [problem]})
    return urls
