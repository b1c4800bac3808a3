"""The app's collaborators, injected into `create_app`, and the `Annotated` aliases routes use."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated
from urllib.parse import unquote_plus

from fastapi import Depends, Header, Request
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from lotlens_common.clock import utc_now
from lotlens_common.logs import bind_log_context
from lotlens_common.urls import Resolver, resolve_host
from lotlens_gateway.admin_process import AdminProcess
from lotlens_gateway.auth import client_for, signature_sent, signs_job, signs_query
from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.errors import validation_failed
from lotlens_gateway.health import KafkaHealth
from lotlens_gateway.idempotency import IdempotencyStore
from lotlens_gateway.intake_slots import IntakeSlots
from lotlens_gateway.job_store import JobStore
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.openai_probe import OpenAIProbe
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.places import Places
from lotlens_gateway.ratelimit import RateLimiter
from lotlens_gateway.relay import Relay
from lotlens_gateway.shared_check import SharedCheck
from lotlens_gateway.shutdown import InFlight
from lotlens_gateway.strikes import AddressStrikes
from lotlens_gateway.sync_mode import SyncDescriber
from lotlens_gateway.validation import Limits

SIGNATURE_DESCRIPTION = ("`sha256=<hex>` HMAC-SHA256 with the client's shared key over the job id of the "
                         "path (or, for `GET /api/v1/batch-jobs`, over the raw query string)")


@dataclass
class GatewayDeps:
    """Everything the routes need; built by `__main__` (or a test) and handed to `create_app`."""

    settings: GatewaySettings
    store: JobStore
    limiter: RateLimiter
    idempotency: IdempotencyStore
    outbox: Outbox
    relay: Relay
    # The Kafka probe (`health.KafkaProbe.health`) and the database ping (`store.ping`), each run
    # once for all concurrent `/health` and `/readyz` calls.
    kafka: SharedCheck[KafkaHealth]
    database: SharedCheck[None]
    describer: SyncDescriber
    metrics: GatewayMetrics
    openai: OpenAIProbe
    intake: IntakeSlots
    strikes: AddressStrikes
    downloads: Places
    sync_slots: Places
    clock: Callable[[], datetime] = utc_now
    # Webhook hosts are resolved at intake with it, as images are with `describer.images.resolve`
    # (tests stub both: no DNS query leaves the machine).
    resolve: Resolver = resolve_host
    # (client id, key): each client's key, and its next key during a rotation (`client_keyring`).
    keys: Sequence[tuple[str, str]] = field(default_factory=list)
    # The requests being answered, for the shutdown's drain (shutdown.py).
    in_flight: InFlight = field(default_factory=InFlight)
    # The child processes making the Kafka admin calls (admin_process.py), ended with the app.
    admin_processes: Sequence[AdminProcess] = ()

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = self.settings.client_keyring()

    async def close_clients(self) -> None:
        """Close the HTTP clients on the loop that served with them: their pooled connections
        belong to it (closed from another loop, shutdown raised "Event loop is closed" and the
        database pools were never disposed). The Kafka admin processes end too."""
        await self.describer.http.aclose()
        await self.describer.model_client.close()
        for admin in self.admin_processes:
            admin.close()

    @property
    def limits(self) -> Limits:
        """Validation limits from the settings."""
        s = self.settings
        return Limits(max_lots=s.max_lots, max_languages=s.max_languages, max_sync_images=s.max_sync_images,
                      max_lot_id_chars=s.max_lot_id_chars,
                      max_additional_info_chars=s.max_additional_info_chars,
                      max_batch_images=s.max_batch_images, allow_loopback_urls=s.allow_loopback_urls)

    async def count_request(self, client_id: str, mode: str) -> None:
        """Apply the client's rate limit for `mode` (429 past it)."""
        # Counting is in memory; only a due write to PostgreSQL costs a thread-pool hop.
        due = self.limiter.count(client_id, mode, self.clock())
        if due is not None:
            await run_in_threadpool(self.limiter.settle, due)


async def get_deps(request: Request) -> GatewayDeps:
    """The deps stored on the app by `create_app` (async: FastAPI runs a sync dependency in a thread)."""
    deps: GatewayDeps = request.app.state.deps
    return deps


Deps = Annotated[GatewayDeps, Depends(get_deps)]
SignatureHeader = Annotated[str | None, Header(alias="X-Signature", description=SIGNATURE_DESCRIPTION)]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def canonical_job_id(job_id: str) -> str:
    """The job id as the gateway wrote it: a UUID in lower case, whatever case the path has."""
    # UUIDs are case-insensitive on input (RFC 9562 §4), and stores hand them back in capitals
    # (SQL Server's uniqueidentifier through pyodbc, Oracle's RAWTOHEX): such a client's job was a
    # 404 on every call, its results unreachable. Other spellings (braces, no hyphens) stay unknown.
    return job_id.lower() if _UUID.fullmatch(job_id) else job_id


# A job-addressed route's `job_id`: canonical before any route code reads it (a retry's id, a
# cancellation's event, an answer's `job_id` are the job's own).
JobId = Annotated[str, AfterValidator(canonical_job_id)]


async def signed_job_client(request: Request, deps: Deps, x_signature: SignatureHeader = None) -> str:
    """The client whose signature over the path's job id, exactly as sent, verifies (not yet counted)."""
    job_id: str = request.path_params["job_id"]
    bind_log_context(job_id=canonical_job_id(job_id))
    return client_for(deps.keys, [job_id.encode()], x_signature, signs_job(job_id))


SignedJobClient = Annotated[str, Depends(signed_job_client)]


async def job_client(client_id: SignedJobClient, deps: Deps) -> str:
    """The client of a job-addressed request, counted against its polling rate limit."""
    await deps.count_request(client_id, "polling")
    return client_id


# The parameters of `GET /api/v1/batch-jobs` (routes_jobs.batch_jobs; a test holds them equal).
LISTING_PARAMETERS = ("status", "limit", "offset", "created_after", "created_before", "cursor")


def refuse_foreign_query(query: bytes) -> None:
    """422 for a listing query that is not `name=value` pairs of the listing's parameters.

    One key signs job ids, raw bodies and this query, and the listing ignored what it did not
    know: the signature of a status poll, sent with the job id as the query, listed all the
    client's jobs (as did a captured test-image-validation body). No job id or JSON body is such
    pairs, so what was signed for another call is refused before its signature is checked.
    """
    # Empty pairs (a trailing or doubled `&`), bare names and percent-encoded names are what
    # clients and proxies send and the listing always took; none of them can make a job id or a
    # JSON body look like the listing's own parameters.
    named = (unquote_plus(pair.decode("latin-1").partition("=")[0]) for pair in query.split(b"&") if pair)
    unknown = [name for name in named if name not in LISTING_PARAMETERS]
    if unknown:
        names = ", ".join(LISTING_PARAMETERS)
        errors = [{"loc": ["query", name[:200]], "type": "unknown_parameter",
                   "msg": f"expected `name=value` with a name among {names}"} for name in unknown]
        raise validation_failed(f"The query string must be `name=value` pairs joined by `&`, each named "
                                f"one of {names}", {"errors": errors[:10]})


async def listing_client(request: Request, deps: Deps, x_signature: SignatureHeader = None) -> str:
    """The client of `GET /api/v1/batch-jobs`: its signature over the raw query string verifies."""
    query: bytes = request.scope.get("query_string", b"")
    signature_sent(x_signature, signs_query(query))  # 401 first: the contract's, whatever the query
    refuse_foreign_query(query)
    client = client_for(deps.keys, [query], x_signature, signs_query(query))
    await deps.count_request(client, "polling")
    return client


JobClient = Annotated[str, Depends(job_client)]


async def downloading_client(client_id: SignedJobClient, deps: Deps) -> AsyncIterator[str]:
    """The client of a results download or a lots page, holding a download place (downloads.py)
    until its answer is sent: a dependency's exit runs after the response.

    The place is taken before the request is counted against the polling rate limit: counted
    first, each download refused 429 `concurrent_downloads` used up a polling request, and a client
    retrying its downloads had none left for its status polls."""
    async with deps.downloads.hold(client_id):
        await deps.count_request(client_id, "polling")
        yield client_id


DownloadClient = Annotated[str, Depends(downloading_client)]
ListingClient = Annotated[str, Depends(listing_client)]
