"""Operations: `/health`, `/metrics`, and the image URL check integrators use to debug their lots."""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from lotlens_common.clock import iso
from lotlens_common.images import check_images
from lotlens_common.lookups import on_behalf_of
from lotlens_gateway import schemas
from lotlens_gateway.auth import SIGNS_BODY, client_for
from lotlens_gateway.body import parse_object, read_body
from lotlens_gateway.deps import Deps
from lotlens_gateway.errors import validation_failed

router = APIRouter()
log = logging.getLogger(__name__)
SERVICE = "lotlens-gateway"
# A test request is small: a few hundred URLs at most.
_TEST_BODY_BYTES = 1024 * 1024


def _version() -> str:
    try:
        return version(SERVICE)
    except PackageNotFoundError:
        return "0.0.0"


async def _database_ok(deps: Deps) -> bool:
    try:
        await deps.database.result()
        return True
    except Exception as exc:  # any failure to run SELECT 1 means "not connected"
        log.warning("database health check failed: %s", exc)
        return False


@router.get("/health", tags=["operations"], response_model=schemas.Health,
            summary="PostgreSQL, Kafka and the pipeline's consumers",
            description=("Unsigned. 503 when PostgreSQL or Kafka does not answer. `background_worker` is "
                         "`running` when every pipeline service's consumer group has members, `degraded` "
                         "otherwise (jobs are accepted but wait); that alone does not make the answer 503."),
            responses={503: {"model": schemas.Health, "description": "PostgreSQL or Kafka is down"}})
async def health(deps: Deps) -> JSONResponse:
    """The gateway's view of its dependencies."""
    database_ok, kafka = await asyncio.gather(_database_ok(deps), deps.kafka.result())
    up = database_ok and kafka.connected
    workers = "running" if kafka.workers_running else ("degraded" if kafka.connected else "unknown")
    body: dict[str, Any] = {
        "status": ("healthy" if workers == "running" else "degraded") if up else "unhealthy",
        "service": SERVICE,
        "timestamp": iso(deps.clock()),
        "version": _version(),
        "database": "connected" if database_ok else "disconnected",
        "kafka": "connected" if kafka.connected else "disconnected",
        "background_worker": workers,
        "consumer_groups": {name: {"state": group.state, "members": group.members}
                            for name, group in kafka.groups.items()},
        "openai": deps.openai.status(),
    }
    return JSONResponse(body, status_code=200 if up else 503)


@router.get("/livez", tags=["operations"], response_model=schemas.Probe,
            summary="Liveness: the process answers (no dependency is asked)",
            description="Unsigned. Always 200 while the event loop serves requests: the liveness probe, so "
                        "that an outage of PostgreSQL or Kafka never makes the kubelet restart the gateway.")
async def livez() -> JSONResponse:
    """The event loop is serving."""
    return JSONResponse({"status": "alive", "checks": {}})


@router.get("/readyz", tags=["operations"], response_model=schemas.Probe,
            summary="Readiness: PostgreSQL answers",
            description=("Unsigned. 503 while PostgreSQL does not answer: the pod leaves the Service's "
                         "endpoints until it does. Kafka is not asked: no request needs it (intake and "
                         "cancel write the outbox, which the relay publishes once Kafka is back)."),
            responses={503: {"model": schemas.Probe, "description": "PostgreSQL is down"}})
async def readyz(deps: Deps) -> JSONResponse:
    """The dependency every request needs. Kafka gated it once: an outage of the brokers took every
    gateway out of the Service, and the outbox that keeps intake going through it served no one."""
    ready = await _database_ok(deps)
    return JSONResponse({"status": "ready" if ready else "not ready",
                         "checks": {"database": "ok" if ready else "disconnected"}},
                        status_code=200 if ready else 503)


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics (unsigned)",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(deps: Deps) -> Response:
    """The text exposition format."""
    return Response(deps.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.post(
    "/api/v1/test-image-validation", tags=["operations"], response_model=schemas.ImageValidation,
    summary="Check image URLs the way lots' images are checked",
    description=(
        "Header-signed: `X-Signature: sha256=<hex>` HMAC-SHA256 over the raw request body bytes. "
        "Each URL gets HEAD (GET when HEAD does not tell): usable when it answers 2xx with an `image/*` "
        "type and at most 10 MB, through at most 3 redirects, on a public address. `threshold_met` is true "
        "when at least half of the URLs (and at least one) are usable. Counts against the synchronous "
        "rate limit."),
    responses=schemas.error_responses(400, 401, 403, 408, 413, 422, 429, 431),
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
    client_id = client_for(deps.keys, [raw], x_signature, SIGNS_BODY)
    await deps.count_request(client_id, "sync")
    urls = parse_object(raw).get("urls")
    limit = deps.settings.max_test_image_urls
    if not (isinstance(urls, list) and 0 < len(urls) <= limit and all(isinstance(u, str) for u in urls)):
        problem = {"field": "urls", "problem": "missing, empty, too long or not strings"}
        raise validation_failed(f"`urls` must be an array of 1 to {limit} strings", {"errors": [problem]})
    policy = deps.describer.images
    with on_behalf_of(f"images:{client_id}"):  # its image hosts' lookups: this client's share
        check = await check_images(urls, deps.describer.http, policy.allow_loopback, policy.concurrency,
                                   max_bytes=policy.max_bytes, timeout_s=policy.timeout_s,
                                   resolve=policy.resolve)
    valid = len(check.valid)
    return JSONResponse({
        "valid_urls": list(check.valid),
        "unreachable_urls": list(check.unreachable),
        "threshold_met": valid > 0 and 2 * valid >= valid + len(check.unreachable),
        "reasons": check.reasons,
    })
